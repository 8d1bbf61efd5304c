// Command consul is a build of the Consul agent and CLI (v1.16.3, the last
// MPL-2.0 release) from Consul's own Go module, so that sluice's tests can
// run a real agent on machines that have only the Go toolchain.
//
// It is not part of sluice: tools/install-consul.sh builds it into bin/consul.
package main

import (
	"fmt"
	"io"
	"log"
	"os"
	"sort"

	mcli "github.com/mitchellh/cli"

	"github.com/hashicorp/consul/command"
	consulcli "github.com/hashicorp/consul/command/cli"
	"github.com/hashicorp/consul/command/version"
	// Registers the Windows service integration on Windows; a no-op elsewhere.
	_ "github.com/hashicorp/consul/service_os"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	// Consul's commands set up their own loggers; silence the standard one
	// the way the upstream binary does.
	log.SetOutput(io.Discard)

	ui := &consulcli.BasicUI{BasicUi: mcli.BasicUi{Writer: os.Stdout, ErrorWriter: os.Stderr}}
	commands := command.RegisteredCommands(ui)
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)

	c := &mcli.CLI{
		Name:         "consul",
		Args:         args,
		Commands:     commands,
		Autocomplete: true,
		HelpFunc:     mcli.FilteredHelpFunc(names, mcli.BasicHelpFunc("consul")),
		HelpWriter:   os.Stdout,
		ErrorWriter:  os.Stderr,
	}
	if c.IsVersion() {
		return version.New(ui).Run(nil)
	}
	code, err := c.Run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "consul: %v\n", err)
		return 1
	}
	return code
}
