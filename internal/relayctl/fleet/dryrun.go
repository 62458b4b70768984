package fleet

import "sigs.k8s.io/controller-runtime/pkg/client"

// DryRun says what a command that writes does with its writes: makes them
// (DryRunNone), only says what they would be (DryRunClient), or sends them
// for the API server to admit, validate and default without persisting
// them (DryRunServer), as kubectl's --dry-run does.
type DryRun string

const (
	DryRunNone   DryRun = ""
	DryRunClient DryRun = "client"
	DryRunServer DryRun = "server"
)

// sends says whether writes reach the API server.
func (d DryRun) sends() bool { return d != DryRunClient }

func (d DryRun) createOptions() []client.CreateOption {
	if d == DryRunServer {
		return []client.CreateOption{client.DryRunAll}
	}
	return nil
}

func (d DryRun) updateOptions() []client.UpdateOption {
	if d == DryRunServer {
		return []client.UpdateOption{client.DryRunAll}
	}
	return nil
}

func (d DryRun) deleteOptions() []client.DeleteOption {
	if d == DryRunServer {
		return []client.DeleteOption{client.DryRunAll}
	}
	return nil
}

// action is what a step reports: action itself when writing, or what it
// would be in a dry run.
func (d DryRun) action(action string) string {
	switch {
	case action == "unchanged":
		return action
	case d == DryRunClient:
		return "would be " + action
	case d == DryRunServer:
		return action + " (server dry run)"
	}
	return action
}
