package sdunit

import (
	"fmt"
	"strings"
)

// Command is one ExecStart=-style line after systemd's processing.
type Command struct {
	// Argv is the program and its arguments after variable expansion.
	Argv []string
	// IgnoreFailure is the "-" prefix: a non-zero exit is not a failure.
	IgnoreFailure bool
}

// ExpandCommand splits an Exec line into words and expands variables from env
// as systemd does: a word that is exactly $NAME becomes the value split at
// whitespace (zero or more words); ${NAME} anywhere in a word is replaced by
// the value as it is, within that one word; $$ is a literal $; an unset
// variable is empty. Words may be quoted with "…" or '…' (with C escapes in
// "…"), and the line may start with the prefixes -, @, :, + and !.
func ExpandCommand(line string, env map[string]string) (Command, error) {
	var cmd Command
	line = strings.TrimSpace(line)
	for len(line) > 0 && strings.ContainsRune("-@:+!", rune(line[0])) {
		if line[0] == '-' {
			cmd.IgnoreFailure = true
		}
		line = line[1:]
	}
	words, err := splitWords(line)
	if err != nil {
		return Command{}, err
	}
	for _, w := range words {
		// systemd looks at the word after removing quotes, so "$NAME" splits
		// too.
		if name, ok := strings.CutPrefix(w, "$"); ok && validName(name) {
			cmd.Argv = append(cmd.Argv, strings.Fields(env[name])...)
			continue
		}
		cmd.Argv = append(cmd.Argv, expandBraced(w, env))
	}
	if len(cmd.Argv) == 0 {
		return Command{}, fmt.Errorf("empty command line %q", line)
	}
	return cmd, nil
}

// splitWords splits at unquoted whitespace and removes quotes.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in := false // inside a word (an empty quoted word counts)
	flush := func() {
		if in {
			words = append(words, cur.String())
		}
		cur.Reset()
		in = false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			flush()
		case c == '\\' && i+1 < len(s):
			in = true
			i++
			cur.WriteByte(s[i])
		case c == '"' || c == '\'':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated %c in %q", c, s)
			}
			in = true
			q := s[i+1 : i+1+end]
			if c == '"' {
				q = strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\n`, "\n", `\t`, "\t").Replace(q)
			}
			cur.WriteString(q)
			i += end + 1
		default:
			in = true
			cur.WriteByte(c)
		}
	}
	flush()
	return words, nil
}

// expandBraced replaces ${NAME} and $$ in one word.
func expandBraced(w string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		if w[i] != '$' || i+1 >= len(w) {
			b.WriteByte(w[i])
			continue
		}
		switch w[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(w[i+2:], '}')
			if end < 0 || !validName(w[i+2:i+2+end]) {
				b.WriteByte('$')
				continue
			}
			b.WriteString(env[w[i+2:i+2+end]])
			i += end + 2
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
