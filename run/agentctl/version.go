package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// versionCommand is `agentctl version`: the line --version prints, for
// operators who type the subcommand as in kubectl or etcdctl.
func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print agentctl's version, as agentd --version prints agentd's",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(a.out, "agentctl %s\n", cmd.Root().Version)
			return err
		},
	}
}
