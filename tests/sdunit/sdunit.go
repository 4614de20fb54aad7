// Package sdunit reads systemd unit files, drop-ins and environment files the
// way systemd does, so tests can run what a unit would run without systemd as
// PID 1: which command lines ExecStart= and ExecStartPre= hold after drop-ins,
// which variables the EnvironmentFile= files set, and how systemd expands
// $VAR and ${VAR} in a command line.
//
// It covers what agentd's units use, not all of systemd: no specifiers (%i),
// no Environment= quoting beyond KEY=VALUE words, no conditional sections.
// Syntax checking is `systemd-analyze verify`'s job; this package is about
// what the files mean once they are valid.
package sdunit

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"
)

// Unit is a unit file with its drop-ins applied in order.
type Unit struct {
	options []*unit.UnitOption
}

// Load reads the unit file at path, then each drop-in in the order given (as
// systemd applies /etc/systemd/system/<name>.d/*.conf in lexical order).
func Load(path string, dropins ...string) (*Unit, error) {
	u := &Unit{}
	for _, p := range append([]string{path}, dropins...) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		opts, err := unit.DeserializeOptions(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		u.options = append(u.options, opts...)
	}
	return u, nil
}

// List returns the values of a list setting (ExecStart=, ExecStartPre=,
// EnvironmentFile=, After=…) in order. As in systemd, an empty assignment
// clears what came before it, which is how a drop-in replaces ExecStart=.
func (u *Unit) List(section, name string) []string {
	var vals []string
	for _, o := range u.options {
		if o.Section != section || o.Name != name {
			continue
		}
		if strings.TrimSpace(o.Value) == "" {
			vals = nil
			continue
		}
		vals = append(vals, o.Value)
	}
	return vals
}

// Value returns the last value of a single-valued setting (Type=,
// Restart=…), and whether it is set.
func (u *Unit) Value(section, name string) (string, bool) {
	var v string
	var ok bool
	for _, o := range u.options {
		if o.Section == section && o.Name == name {
			v, ok = o.Value, true
		}
	}
	return v, ok
}

// Words returns the space-separated words of every value of a list setting
// such as After= or Wants=, with the same reset rule as List.
func (u *Unit) Words(section, name string) []string {
	var w []string
	for _, v := range u.List(section, name) {
		w = append(w, strings.Fields(v)...)
	}
	return w
}

// EnvFile is one EnvironmentFile= entry.
type EnvFile struct {
	Path string
	// Optional is the "-" prefix: a missing file is not an error.
	Optional bool
}

// EnvironmentFiles returns the unit's EnvironmentFile= entries in order.
func (u *Unit) EnvironmentFiles() []EnvFile {
	var fs []EnvFile
	for _, v := range u.List("Service", "EnvironmentFile") {
		v = strings.TrimSpace(v)
		f := EnvFile{Path: v}
		if strings.HasPrefix(v, "-") {
			f = EnvFile{Path: v[1:], Optional: true}
		}
		fs = append(fs, f)
	}
	return fs
}
