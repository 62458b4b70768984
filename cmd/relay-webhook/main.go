// Command relay-webhook; see its --help.
package main

import (
	"github.com/meshrelay/meshrelay/cmd/relay-webhook/app"
	"github.com/meshrelay/meshrelay/internal/command"
)

func main() {
	command.Main(app.NewCommand())
}
