package main

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/healthzaddr/healthzaddrtest"
)

// TestHealthzEnvCases: agentd takes the health server's address from each
// environment of healthzaddrtest.Cases as the case says; agentctl's
// TestStatusAsksWhereAgentdListens runs the same cases through agentctl
// status, so the two cannot take one environment two ways.
func TestHealthzEnvCases(t *testing.T) {
	for _, tc := range healthzaddrtest.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			opts, err := parseArgs(nil, envMap(tc.Env), nil)
			switch {
			case tc.Err != "":
				if err == nil || !strings.Contains(err.Error(), tc.Err) {
					t.Errorf("env %v: err %v, want one saying %q", tc.Env, err, tc.Err)
				}
			case err != nil:
				t.Errorf("env %v: %v", tc.Env, err)
			case opts.cfg.HealthzAddr != tc.Listen:
				t.Errorf("env %v: health server at %q, want %q", tc.Env, opts.cfg.HealthzAddr, tc.Listen)
			}
		})
	}
}
