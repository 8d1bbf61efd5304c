package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/file"
)

func (a *app) validateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "validate PATH...",
		Short: "Check policy files, policy directories and registry files offline",
		Long: "Check policy files, policy directories and registry files offline, with the same\n" +
			"parsers and checks sluice serve uses. Policy files given together are checked as one\n" +
			"set (so duplicates across them are found), as are the files of a directory.\n" +
			"Prints file:line: field: message for every problem and exits 1 if there is any error.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var diags []sources.Diagnostic
			var policyFiles []policy.File
			for _, path := range args {
				fi, err := os.Stat(path)
				if err != nil {
					diags = append(diags, ioError(path, err))
					continue
				}
				if fi.IsDir() {
					files, ds := policy.ReadDir(path)
					diags = append(diags, ds...)
					policyFiles = append(policyFiles, files...)
					continue
				}
				data, err := os.ReadFile(path)
				if err != nil {
					diags = append(diags, ioError(path, err))
					continue
				}
				if isRegistryFile(data) {
					_, ds := file.Parse(path, data)
					diags = append(diags, ds...)
					continue
				}
				policyFiles = append(policyFiles, policy.File{Name: path, Data: data})
			}
			if len(policyFiles) > 0 {
				_, ds := policy.Load(policyFiles)
				diags = append(diags, ds...)
			}
			errs := 0
			for _, d := range diags {
				line := d.String()
				if d.Severity == sources.SeverityWarning {
					line += " (warning)"
				} else {
					errs++
				}
				fmt.Fprintln(a.stdout, line)
			}
			if errs > 0 {
				return exitError(1)
			}
			return nil
		},
	}
}

// isRegistryFile tells a registry file (a top-level services list) from a
// policy file (documents with apiVersion and kind).
func isRegistryFile(data []byte) bool {
	for _, line := range bytes.Split(data, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("services:")) {
			return true
		}
		if bytes.HasPrefix(line, []byte("apiVersion:")) || bytes.HasPrefix(line, []byte("kind:")) {
			return false
		}
	}
	return false
}

func ioError(path string, err error) sources.Diagnostic {
	return sources.Diagnostic{Severity: sources.SeverityError, Location: filepath.Clean(path), Message: err.Error()}
}
