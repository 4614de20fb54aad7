package sdunit

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Command is one ExecStart=-style line after systemd's processing.
type Command struct {
	// Argv is the program and its arguments after variable expansion.
	Argv []string
	// IgnoreFailure is the "-" prefix: a non-zero exit is not a failure.
	IgnoreFailure bool
}

// whitespace separates the words of a command line and of a $NAME value
// (systemd's WHITESPACE).
const whitespace = " \t\n\r"

// ExpandCommand splits an Exec line into words and expands variables from env
// as systemd does (systemd.service(5), "Command lines"; systemd.syntax(7),
// "Quoting").
//
// Words are separated by unquoted whitespace. Within a word, "…" and '…'
// quote, and may start and end anywhere in it; a backslash starts a C escape
// inside either kind of quotes and outside them: \a \b \f \n \r \t \v \\ \"
// \' \s (a space), \xHH, \NNN (octal), \uHHHH and \UHHHHHHHH. An escape
// systemd does not know (such as "\ " or "\$"), or one that would make a NUL,
// is kept as it is, backslash included, as systemd does after warning about
// it. A quote left open is an error.
//
// The first word, after quote removal, may start with the prefixes -, @, :,
// +, ! and !!; "-" sets IgnoreFailure and ":" turns variable expansion off.
// "@" makes the word after the path argv[0]: Argv holds the path and then
// the words that follow it. Not covered: a lone ";" between two commands,
// and the "|" prefix of recent systemd.
//
// Expansion works on the words after quote removal: a word that is $NAME
// becomes the value split at whitespace into zero or more words, honouring
// quotes in the value ('…' and "…"; a backslash there takes the next
// character as it is), and an invalid or unset NAME makes no word; ${NAME}
// anywhere in a word is replaced by the value as it is, within that one word,
// and an unset NAME by nothing; $$ is a literal $. So "$NAME" splits like
// $NAME, and a literal $ in any word is written $$.
func ExpandCommand(line string, env map[string]string) (Command, error) {
	words, err := splitWords(line, true)
	if err != nil {
		return Command{}, err
	}
	if len(words) == 0 {
		return Command{}, fmt.Errorf("empty command line %q", line)
	}
	var cmd Command
	// The prefixes, each at most once; "+", "!" and "!!" exclude one
	// another, and "!!" is "!" twice (load-fragment.c).
	var argv0, noExpand, privileged, noSetuid, ambient bool
	first := words[0]
prefixes:
	for ; first != ""; first = first[1:] {
		switch c := first[0]; {
		case c == '-' && !cmd.IgnoreFailure:
			cmd.IgnoreFailure = true
		case c == '@' && !argv0:
			argv0 = true
		case c == ':' && !noExpand:
			noExpand = true
		case c == '+' && !privileged && !noSetuid && !ambient:
			privileged = true
		case c == '!' && !privileged && !noSetuid && !ambient:
			noSetuid = true
		case c == '!' && !privileged && !ambient:
			noSetuid, ambient = false, true
		default:
			break prefixes
		}
	}
	if first == "" {
		return Command{}, fmt.Errorf("no program in command line %q", line)
	}
	words[0] = first
	if noExpand {
		cmd.Argv = words
		return cmd, nil
	}
	for _, w := range words {
		if w != "" && w[0] == '$' && (len(w) == 1 || (w[1] != '{' && w[1] != '$')) {
			// A whole-word $NAME; with a name that is not valid (a lone
			// "$" too) systemd looks nothing up, and the word is dropped
			// like an unset one.
			if name := w[1:]; validName(name) {
				vs, _ := splitWords(env[name], false)
				cmd.Argv = append(cmd.Argv, vs...)
			}
			continue
		}
		cmd.Argv = append(cmd.Argv, expandBraced(w, env))
	}
	if len(cmd.Argv) == 0 {
		return Command{}, fmt.Errorf("command line %q expands to no words", line)
	}
	return cmd, nil
}

// splitWords splits s at unquoted whitespace and removes quotes, as systemd's
// extract_first_word does. With cescapes (a command line: EXTRACT_UNQUOTE and
// EXTRACT_CUNESCAPE, retried relaxed) a backslash starts a C escape, an
// unknown one is kept with its backslash, a trailing backslash outside
// quotes is kept, and an open quote is an error. Without (a $NAME value:
// EXTRACT_UNQUOTE and EXTRACT_RELAX) a backslash takes the next character
// as it is, a trailing one is dropped, and an open quote runs to the end;
// that never fails.
func splitWords(s string, cescapes bool) ([]string, error) {
	var words []string
	i := 0
	for {
		for i < len(s) && strings.IndexByte(whitespace, s[i]) >= 0 {
			i++
		}
		if i >= len(s) {
			return words, nil
		}
		var w []byte
		var quote byte // 0, '\'' or '"'
	word:
		for i < len(s) {
			c := s[i]
			switch {
			case c == '\\':
				i++
				if i >= len(s) {
					if quote != 0 && cescapes {
						return nil, fmt.Errorf("unterminated %c in %q", quote, s)
					}
					if cescapes {
						w = append(w, '\\')
					}
					break word
				}
				if !cescapes {
					w = append(w, s[i])
					i++
					continue
				}
				r, n := cunescapeOne(s[i:])
				if n == 0 {
					w = append(w, '\\', s[i]) // unknown: kept as it is
					i++
					continue
				}
				w = append(w, r...)
				i += n
			case quote != 0:
				if c == quote {
					quote = 0
				} else {
					w = append(w, c)
				}
				i++
			case c == '"' || c == '\'':
				quote = c
				i++
			case strings.IndexByte(whitespace, c) >= 0:
				break word
			default:
				w = append(w, c)
				i++
			}
		}
		if quote != 0 && cescapes {
			return nil, fmt.Errorf("unterminated %c in %q", quote, s)
		}
		words = append(words, string(w))
	}
}

// cunescapeOne decodes the C escape at the start of p (the text after a
// backslash) as systemd's cunescape_one does. It returns the bytes and how
// many bytes of p the escape took, or n == 0 for an escape systemd rejects.
func cunescapeOne(p string) (b []byte, n int) {
	if p == "" {
		return nil, 0
	}
	if c := strings.IndexByte(`abfnrtv\"'s`, p[0]); c >= 0 {
		return []byte{"\a\b\f\n\r\t\v\\\"' "[c]}, 1
	}
	hex := func(s string) (uint32, bool) {
		var v uint32
		for i := 0; i < len(s); i++ {
			switch c := s[i]; {
			case c >= '0' && c <= '9':
				v = v<<4 | uint32(c-'0')
			case c >= 'a' && c <= 'f':
				v = v<<4 | uint32(c-'a'+10)
			case c >= 'A' && c <= 'F':
				v = v<<4 | uint32(c-'A'+10)
			default:
				return 0, false
			}
		}
		return v, true
	}
	switch c := p[0]; {
	case c == 'x':
		if len(p) < 3 {
			return nil, 0
		}
		v, ok := hex(p[1:3])
		if !ok || v == 0 {
			return nil, 0
		}
		return []byte{byte(v)}, 3
	case c == 'u':
		if len(p) < 5 {
			return nil, 0
		}
		v, ok := hex(p[1:5])
		if !ok || v == 0 {
			return nil, 0
		}
		// systemd encodes any 16-bit value, surrogates included, as
		// UTF-8 would.
		if v < 0x800 {
			return utf8.AppendRune(nil, rune(v)), 5
		}
		return []byte{0xe0 | byte(v>>12), 0x80 | byte(v>>6)&0x3f, 0x80 | byte(v)&0x3f}, 5
	case c == 'U':
		if len(p) < 9 {
			return nil, 0
		}
		v, ok := hex(p[1:9])
		if !ok || v == 0 || !unicharIsValid(v) {
			return nil, 0
		}
		return utf8.AppendRune(nil, rune(v)), 9
	case c >= '0' && c <= '7':
		if len(p) < 3 {
			return nil, 0
		}
		var v uint32
		for i := 0; i < 3; i++ {
			if p[i] < '0' || p[i] > '7' {
				return nil, 0
			}
			v = v<<3 | uint32(p[i]-'0')
		}
		if v == 0 || v > 255 {
			return nil, 0
		}
		return []byte{byte(v)}, 3
	}
	return nil, 0
}

// unicharIsValid is systemd's unichar_is_valid: no surrogates, no
// non-characters, nothing past U+10FFFF.
func unicharIsValid(c uint32) bool {
	switch {
	case c >= 0x110000, c&0xfffff800 == 0xd800, c >= 0xfdd0 && c <= 0xfdef, c&0xfffe == 0xfffe:
		return false
	}
	return true
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
