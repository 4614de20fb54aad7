package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
	"testing"
)

// leafCommands are the binaries other programs run on every node, not agentd
// itself: the container runtime executes agentd-cni for every pod ADD and DEL,
// and docker.service runs agentd-docker-opts before dockerd. They read
// subnet.env (subnet/subnetenv) and must not link the etcd client with its gRPC
// and protobuf, which only agentd and agentctl need: that tripled their size
// and start-up work for nothing.
var leafCommands = []string{
	"github.com/agentd/agentd/run/agentd-cni",
	"github.com/agentd/agentd/run/agentd-docker-opts",
}

// forbiddenDeps are import-path prefixes that must not appear among
// leafCommands' dependencies, the cause first: etcd brings in the others.
var forbiddenDeps = []string{
	"go.etcd.io/",
	"google.golang.org/grpc",
	"google.golang.org/protobuf",
}

// TestLeafCommandsDoNotLinkEtcd asks the go tool for each leaf command's
// dependencies (as built for Linux, where they run) and fails naming the first
// forbidden package (etcd's, if any) and the import chain that brings it in.
func TestLeafCommandsDoNotLinkEtcd(t *testing.T) {
	// go test puts the GOROOT/bin of the go command running it first in
	// PATH, so this is that go tool. (runtime.GOROOT is deprecated and empty
	// in a binary built with -trimpath.)
	goTool, err := exec.LookPath("go")
	if err != nil {
		const msg = "the go tool is not in PATH, so the dependencies cannot be listed"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI is set, so this is a failure: " + err.Error())
		}
		t.Skip(msg + ": " + err.Error())
	}
	for _, cmd := range leafCommands {
		t.Run(path.Base(cmd), func(t *testing.T) {
			pkgs := listDeps(t, goTool, cmd)
			for _, bad := range forbiddenDeps {
				for _, p := range pkgs {
					if strings.HasPrefix(p.ImportPath, bad) {
						t.Fatalf("%s depends on %s (prefix %q), via\n\t%s",
							cmd, p.ImportPath, bad, strings.Join(importChain(pkgs, cmd, p.ImportPath), "\n\t-> "))
					}
				}
			}
		})
	}
}

type listedPackage struct {
	ImportPath string
	Imports    []string
}

// listDeps returns root and every package it depends on, in go list -deps
// order (dependencies before their importers).
func listDeps(t *testing.T, goTool, root string) []listedPackage {
	t.Helper()
	c := exec.Command(goTool, "list", "-deps", "-json=ImportPath,Imports", root)
	c.Env = append(os.Environ(), "GOOS=linux")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", root, err, stderr.Bytes())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list -deps %s: decode: %v", root, err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 || pkgs[len(pkgs)-1].ImportPath != root {
		t.Fatalf("go list -deps %s listed %d packages, not ending with %s", root, len(pkgs), root)
	}
	return pkgs
}

// importChain is a shortest import path from root to target, for the message.
func importChain(pkgs []listedPackage, root, target string) []string {
	imports := make(map[string][]string, len(pkgs))
	for _, p := range pkgs {
		imports[p.ImportPath] = p.Imports
	}
	from := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == target {
			var chain []string
			for ; p != ""; p = from[p] {
				chain = append([]string{p}, chain...)
			}
			return chain
		}
		for _, q := range imports[p] {
			if _, seen := from[q]; !seen {
				from[q] = p
				queue = append(queue, q)
			}
		}
	}
	return []string{root, "?", target}
}
