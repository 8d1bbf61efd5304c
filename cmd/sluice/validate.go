package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sluice-mesh/sluice/sources/file"
)

func (a *app) validateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check registry files offline with the same parser sluice serve uses",
		Long: "Check registry files offline with the same parser sluice serve uses.\n" +
			"Prints file:line: field: message for every problem and exits 1 if there is any.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bad := 0
			for _, path := range args {
				data, err := os.ReadFile(path)
				if err != nil {
					fmt.Fprintf(a.stdout, "%s: %v\n", path, err)
					bad++
					continue
				}
				if _, diags := file.Parse(path, data); len(diags) > 0 {
					for _, d := range diags {
						fmt.Fprintln(a.stdout, d.String())
					}
					bad++
				}
			}
			if bad > 0 {
				return exitError(1)
			}
			return nil
		},
	}
}
