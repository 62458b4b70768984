// Command relay-agent; see its --help.
package main

import (
	"github.com/meshrelay/meshrelay/cmd/relay-agent/app"
	"github.com/meshrelay/meshrelay/internal/command"
)

func main() {
	command.Main(app.NewCommand())
}
