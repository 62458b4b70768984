// Command relayctl; see its --help.
package main

import (
	"github.com/meshrelay/meshrelay/cmd/relayctl/app"
	"github.com/meshrelay/meshrelay/internal/command"
)

func main() {
	command.Main(app.NewCommand())
}
