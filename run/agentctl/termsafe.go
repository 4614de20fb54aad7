package main

import "github.com/agentd/agentd/internal/termsafe"

// printable is s as agentctl prints what others wrote (etcd's keys and
// values, the agent's answer) in its text: with the control and format
// characters, U+2028, U+2029 and the bytes that are not UTF-8 escaped as Go
// quotes them (termsafe.Text). Its -o json goes through termsafe.JSON.
func printable(s string) string { return termsafe.Text(s) }
