package main

import (
	"bytes"
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
			"Registry files given alongside are the catalog the policies are checked against (a\n" +
			"policy or a dependency naming a service not in it is a warning); without one, the\n" +
			"services that have a ServicePolicy are the known services for dependencies.\n" +
			"Prints file:line: field: message for every problem, with \"(warning)\" after a\n" +
			"warning, and exits 1 if there is any error; warnings alone exit 0.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var diags []sources.Diagnostic
			var policyFiles []policy.File
			var catalog []string
			registries, registryErrors := 0, false
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
					st, ds := file.Parse(path, data)
					diags = append(diags, ds...)
					registries++
					if st == nil {
						registryErrors = true
						continue
					}
					for _, svc := range st.Services {
						catalog = append(catalog, svc.Name)
					}
					continue
				}
				policyFiles = append(policyFiles, policy.File{Name: path, Data: data})
			}
			if len(policyFiles) > 0 {
				set, ds := policy.Load(policyFiles)
				diags = append(diags, ds...)
				switch {
				case set == nil || registryErrors:
					// Errors are reported; warnings against a partial
					// catalog would only add noise.
				case registries > 0:
					diags = append(diags, set.Warnings(catalog)...)
				default:
					diags = append(diags, policyOnlyWarnings(set)...)
				}
			}
			if printDiagnostics(a.stdout, diags) > 0 {
				return exitError(1)
			}
			return nil
		},
	}
}

// policyOnlyWarnings checks dependencies when no registry file was given:
// the only services known are those with a ServicePolicy, and the messages
// say so.
func policyOnlyWarnings(set *policy.Set) []sources.Diagnostic {
	ws := set.DependencyWarnings(set.Services())
	for i := range ws {
		ws[i].Message += "; without a registry file, the known services are those with a ServicePolicy"
	}
	ws = append(ws, set.LocalityWarnings()...)
	return append(ws, set.RegexWarnings()...)
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
