package app

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// reportAPIVersion is the apiVersion of every report relayctl prints with
// -o json or -o yaml; each report's kind says which command wrote it.
const reportAPIVersion = "meshrelay.dev/v1alpha1"

// Kinds of the reports.
const (
	kindCheck      = "CheckReport"
	kindValidation = "ValidationReport"
	kindRegister   = "RegistrationReport"
	kindRevoke     = "RevocationReport"
	kindBackup     = "BackupReport"
	kindRestore    = "RestoreReport"
	// kindRotate is rotate root|intermediate|server's report,
	// kindRotationStatus rotate status's.
	kindRotate         = "RotationRequestReport"
	kindRotationStatus = "RotationStatusReport"
)

// outputFlag adds -o/--output to cmd.
func outputFlag(cmd *cobra.Command, into *string) {
	cmd.Flags().StringVarP(into, "output", "o", "", "output format: empty for people, json or yaml for a report with apiVersion "+reportAPIVersion+" and its kind")
}

// checkOutputFormat refuses an unknown -o; commands call it before they
// read or write anything.
func checkOutputFormat(format string) error {
	switch format {
	case "", "json", "yaml":
		return nil
	}
	return usageError(fmt.Errorf("unknown output format %q: use json, yaml, or leave -o out", format))
}

// printResult writes v as a report of kind in JSON or YAML, or human() for
// people. A v that marshals to an object gets apiVersion and kind as its
// first fields; a list becomes the report's items.
func printResult(w io.Writer, format, kind string, v any, human func() string) error {
	if err := checkOutputFormat(format); err != nil {
		return err
	}
	if format == "" {
		_, err := io.WriteString(w, human())
		return err
	}
	data, err := report(kind, v)
	if err != nil {
		return fmt.Errorf("failed to write the %s: %w", kind, err)
	}
	if format == "yaml" {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return fmt.Errorf("failed to write the %s: %w", kind, err)
		}
		_, err = w.Write(data)
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, data, "", "  "); err != nil {
		return fmt.Errorf("failed to write the %s: %w", kind, err)
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

// report is v as JSON with apiVersion and kind in front.
func report(kind string, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	head, err := json.Marshal(map[string]string{"apiVersion": reportAPIVersion, "kind": kind})
	if err != nil {
		return nil, err
	}
	head = bytes.TrimSuffix(head, []byte("}"))
	// json.Marshal of a map sorts keys: apiVersion comes before kind.
	switch {
	case bytes.HasPrefix(body, []byte("{}")):
		return append(head, '}'), nil
	case bytes.HasPrefix(body, []byte("{")):
		return append(append(head, ','), body[1:]...), nil
	case bytes.Equal(body, []byte("null")):
		body = []byte("[]")
	}
	return append(append(append(head, []byte(`,"items":`)...), body...), '}'), nil
}

// table renders rows under header in columns aligned by tabwriter, as
// kubectl prints lists.
func table(header []string, rows [][]string) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_ = tw.Flush()
	return b.String()
}
