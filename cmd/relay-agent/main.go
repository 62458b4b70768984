// Command relay-agent; see its --help.
package main

import (
	"github.com/meshrelay/meshrelay/cmd/relay-agent/app"
	"github.com/meshrelay/meshrelay/pkg/cli"
)

func main() {
	cli.Main(app.NewCommand())
}
