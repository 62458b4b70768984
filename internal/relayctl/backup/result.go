package backup

// Actions of a Result.
const (
	// ActionSaved: Backup wrote the secret to its file.
	ActionSaved = "saved"
	// ActionMissing: Backup found no such secret and skipped it.
	ActionMissing = "missing"
	// ActionCreated: Restore created the secret, which did not exist.
	ActionCreated = "created"
	// ActionUpdated: Restore replaced the secret's data (Force).
	ActionUpdated = "updated"
	// ActionUnchanged: the cluster already holds the file's data.
	ActionUnchanged = "unchanged"
	// ActionRefused: Restore will not write the secret; Detail says why.
	ActionRefused = "refused"
	// ActionSkipped: Restore would have written the secret, but another
	// was refused, so nothing was written.
	ActionSkipped = "skipped"
	// ActionWouldCreate and ActionWouldUpdate are what a dry run reports
	// in place of ActionCreated and ActionUpdated.
	ActionWouldCreate = "would create"
	ActionWouldUpdate = "would update"
)

// Result is what Backup or Restore did, or would do, with one secret.
type Result struct {
	// Secret is the secret's name.
	Secret string `json:"secret"`
	// Action is one of the Action constants.
	Action string `json:"action"`
	// Detail names the file and, for a refusal, the reason and the fix.
	// It never holds secret data.
	Detail string `json:"detail,omitempty"`
}

// Refused counts the results whose action is ActionRefused.
func Refused(results []Result) int {
	n := 0
	for _, r := range results {
		if r.Action == ActionRefused {
			n++
		}
	}
	return n
}
