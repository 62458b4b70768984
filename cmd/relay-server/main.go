// Command relay-server; see its --help.
package main

import (
	"github.com/meshrelay/meshrelay/cmd/relay-server/app"
	"github.com/meshrelay/meshrelay/pkg/cli"
)

func main() {
	cli.Main(app.NewCommand())
}
