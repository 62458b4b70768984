// Command relayctl; see its --help.
package main

import (
	"github.com/meshrelay/meshrelay/cmd/relayctl/app"
	"github.com/meshrelay/meshrelay/pkg/cli"
)

func main() {
	cli.Main(app.NewCommand())
}
