// Package command holds what every meshrelay binary's main does the same way:
// a context cancelled by SIGINT or SIGTERM, running one cobra command, and
// turning its error into a message on stderr and an exit status.
package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// ExitError carries an exit status other than 1 out of a command.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }

func (e *ExitError) Unwrap() error { return e.Err }

// Main runs cmd with a context that ends on SIGINT or SIGTERM and exits the
// process with the status Run returns.
func Main(cmd *cobra.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, cmd, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// Run executes cmd with args and returns the process exit status: 0 on
// success, the code of an *ExitError, or 1 for any other error, which it
// prints to stderr as "Error: <message>", or as a JSON log line when the
// command that ran was given --log-json.
func Run(ctx context.Context, cmd *cobra.Command, args []string, stderr io.Writer) int {
	cmd.SetArgs(args)
	cmd.SetErr(stderr)
	cmd.SilenceErrors = true
	cmd.SilenceUsage = true
	ran, err := cmd.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	if f := ran.Flags().Lookup("log-json"); f != nil && f.Value.String() == "true" {
		slog.New(slog.NewJSONHandler(stderr, nil)).Error("exiting", "error", err.Error())
	} else {
		fmt.Fprintf(stderr, "Error: %v\n", err)
	}
	var exit *ExitError
	if errors.As(err, &exit) {
		return exit.Code
	}
	return 1
}

// NotYetBuilt is what a command whose capability has not landed returns: it
// says so, and where the README tracks it, with exit status 2.
func NotYetBuilt(what string) error {
	return &ExitError{Code: 2, Err: fmt.Errorf("%s is not built yet: see \"Status\" in README.md for what works today", what)}
}
