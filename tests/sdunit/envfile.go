package sdunit

import (
	"fmt"
	"strings"
)

// Var is one KEY=VALUE assignment.
type Var struct {
	Key, Value string
}

// ParseEnvironmentFile parses the content of a file named by
// EnvironmentFile=, following systemd's rules: one KEY=VALUE per line; blank
// lines and lines starting with '#' or ';' ignored (a backslash at the end of
// such a line continues the comment, as before systemd v254); whitespace
// around the key and before the value ignored; in an unquoted value a backslash takes the
// next character literally, a backslash at the end of a line continues the
// value on the next line, and trailing whitespace is dropped; '…' is literal;
// in "…" a backslash escapes only ", \, `, $ and a newline. Quoted and
// unquoted parts next to each other join into one value. A later assignment
// of the same key wins (see Env). The error names the line.
func ParseEnvironmentFile(b []byte) ([]Var, error) {
	var vars []Var
	s := string(b)
	line := 1
	for i := 0; i < len(s); {
		// Start of a line: skip leading whitespace.
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r') {
			i++
		}
		if i >= len(s) {
			break
		}
		switch s[i] {
		case '\n':
			i++
			line++
			continue
		case '#', ';':
			// Before systemd v254 (Debian 12 has v252) a backslash in a
			// comment takes the next character with it, so a comment
			// ending in one swallows the next line; v254 ends a comment at
			// every newline. The older rule is modelled: what reads right
			// under it reads right under both.
			for i < len(s) && s[i] != '\n' {
				if s[i] == '\\' && i+1 < len(s) {
					if s[i+1] == '\n' {
						line++
					}
					i++
				}
				i++
			}
			continue
		}
		start := line
		eq := strings.IndexAny(s[i:], "=\n")
		if eq < 0 || s[i+eq] == '\n' {
			return nil, fmt.Errorf("line %d: no '=' in %q", start, firstLine(s[i:]))
		}
		key := strings.TrimRight(s[i:i+eq], " \t\r")
		if !validName(key) {
			return nil, fmt.Errorf("line %d: %q is not a valid variable name", start, key)
		}
		i += eq + 1
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		var val strings.Builder
		pendingSpace := 0 // unquoted trailing whitespace, kept only if more follows
	value:
		for i < len(s) {
			c := s[i]
			switch {
			case c == '\n':
				break value
			case c == '\\':
				i++
				if i >= len(s) {
					break value
				}
				if s[i] == '\n' {
					line++ // continuation: the newline is dropped
					i++
					continue
				}
				val.WriteString(strings.Repeat(" ", pendingSpace))
				pendingSpace = 0
				val.WriteByte(s[i])
				i++
			case c == '\'':
				end := strings.IndexByte(s[i+1:], '\'')
				if end < 0 {
					return nil, fmt.Errorf("line %d: unterminated ' in the value of %s", start, key)
				}
				val.WriteString(strings.Repeat(" ", pendingSpace))
				pendingSpace = 0
				q := s[i+1 : i+1+end]
				line += strings.Count(q, "\n")
				val.WriteString(q)
				i += end + 2
			case c == '"':
				val.WriteString(strings.Repeat(" ", pendingSpace))
				pendingSpace = 0
				i++
				closed := false
				for i < len(s) {
					d := s[i]
					if d == '"' {
						closed = true
						i++
						break
					}
					if d == '\\' && i+1 < len(s) {
						switch s[i+1] {
						case '"', '\\', '`', '$':
							val.WriteByte(s[i+1])
							i += 2
							continue
						case '\n':
							line++
							i += 2
							continue
						}
					}
					if d == '\n' {
						line++
					}
					val.WriteByte(d)
					i++
				}
				if !closed {
					return nil, fmt.Errorf("line %d: unterminated \" in the value of %s", start, key)
				}
			case c == ' ' || c == '\t' || c == '\r':
				pendingSpace++
				i++
			default:
				val.WriteString(strings.Repeat(" ", pendingSpace))
				pendingSpace = 0
				val.WriteByte(c)
				i++
			}
		}
		vars = append(vars, Var{Key: key, Value: val.String()})
	}
	return vars, nil
}

// Env folds vars into a map; later assignments win.
func Env(vars []Var) map[string]string {
	m := make(map[string]string, len(vars))
	for _, v := range vars {
		m[v.Key] = v.Value
	}
	return m
}

// validName is systemd's rule for an environment variable name: letters,
// digits and '_', not starting with a digit.
func validName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
