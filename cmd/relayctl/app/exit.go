package app

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/command"
)

// Exit statuses of every relayctl command.
const (
	// exitProblems: the command ran and found problems (check, validate).
	exitProblems = 1
	// exitCannotRun: the command could not run: bad flags or arguments,
	// an unreachable cluster, a forbidden request, a refused write.
	exitCannotRun = 2
)

// exitCodesHelp is the paragraph every --help ends its description with.
const exitCodesHelp = `Exit status: 0 when everything is healthy or done, 1 when problems were found
(check, validate), 2 when the command could not run (bad flags, an unreachable or
forbidden cluster, a refused write).`

// usageError marks err as a wrong flag or argument: exit status 2.
func usageError(err error) error {
	return &command.ExitError{Code: exitCannotRun, Err: err}
}

// problemsFound marks err as problems that a command found: exit status 1.
func problemsFound(err error) error {
	return &command.ExitError{Code: exitProblems, Err: err}
}

// setExitCodes makes every command of the tree under root exit with
// exitCannotRun for any error that does not carry its own status: flag and
// argument errors, and the errors of RunE, which are about not being able
// to run, since problems found are returned as problemsFound.
func setExitCodes(root *cobra.Command) {
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError(fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath()))
	})
	var walk func(*cobra.Command)
	walk = func(cmd *cobra.Command) {
		if args := cmd.Args; args != nil {
			cmd.Args = func(c *cobra.Command, a []string) error {
				if err := args(c, a); err != nil {
					return usageError(fmt.Errorf("%w (see %s --help)", err, c.CommandPath()))
				}
				return nil
			}
		}
		if run := cmd.RunE; run != nil {
			// cobra checks required flags after PreRunE without a status:
			// check them first, as usage errors.
			pre := cmd.PreRunE
			cmd.PreRunE = func(c *cobra.Command, a []string) error {
				if err := c.ValidateRequiredFlags(); err != nil {
					return usageError(fmt.Errorf("%w (see %s --help)", err, c.CommandPath()))
				}
				if err := c.ValidateFlagGroups(); err != nil {
					return usageError(fmt.Errorf("%w (see %s --help)", err, c.CommandPath()))
				}
				if pre != nil {
					return cannotRun(pre(c, a))
				}
				return nil
			}
			cmd.RunE = func(c *cobra.Command, a []string) error {
				return cannotRun(run(c, a))
			}
		}
		if pre := cmd.PersistentPreRunE; pre != nil {
			cmd.PersistentPreRunE = func(c *cobra.Command, a []string) error {
				return cannotRun(pre(c, a))
			}
		}
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// cannotRun gives err exitCannotRun unless it carries a status.
func cannotRun(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*command.ExitError](err); ok {
		return err
	}
	return &command.ExitError{Code: exitCannotRun, Err: err}
}
