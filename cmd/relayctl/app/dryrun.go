package app

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
)

// bareDryRun is what a --dry-run given without a value parses as.
const bareDryRun = "unchanged"

// dryRunFlag is kubectl's --dry-run=none|client|server. A bare --dry-run,
// and the old --dry-run=true|false, still work: they mean client and none.
type dryRunFlag struct {
	mode fleet.DryRun
	// old is the deprecated form given, if any.
	old string
}

func (d *dryRunFlag) String() string {
	if d.mode == fleet.DryRunNone {
		return "none"
	}
	return string(d.mode)
}

func (d *dryRunFlag) Set(s string) error {
	d.old = ""
	switch s {
	case "none":
		d.mode = fleet.DryRunNone
	case "client":
		d.mode = fleet.DryRunClient
	case "server":
		d.mode = fleet.DryRunServer
	case bareDryRun, "true":
		d.mode, d.old = fleet.DryRunClient, s
	case "false":
		d.mode, d.old = fleet.DryRunNone, s
	default:
		return fmt.Errorf("use none, client (print what would be written) or server (send it, persist nothing)")
	}
	return nil
}

func (d *dryRunFlag) Type() string { return "string" }

// warn notes on w that a deprecated form was used, and what replaces it.
func (d *dryRunFlag) warn(w io.Writer) {
	switch d.old {
	case bareDryRun, "true":
		fmt.Fprintln(w, "Warning: --dry-run without a value is deprecated: use --dry-run=client (the same) or --dry-run=server")
	case "false":
		fmt.Fprintln(w, "Warning: --dry-run=false is deprecated: use --dry-run=none")
	}
}

// bindDryRun adds --dry-run to cmd.
func bindDryRun(cmd *cobra.Command, d *dryRunFlag, what string) {
	f := cmd.Flags().VarPF(d, "dry-run", "", `"none" writes; "client" checks everything and prints `+what+`, writing nothing; "server" also sends every write to the API server, which admits and validates it without keeping it`)
	f.NoOptDefVal = bareDryRun
}
