package dist

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// TestREADMEMessagesExist: every log line and error message README quotes
// in its troubleshooting table (any quote of the first column; in the
// others, quotes of three words or more that read as a message) or in
// prose that says the agent logs (or says) it, is still one the code can
// print, and every log field it quotes (`holder=…`, anywhere) is one the
// code writes. A reworded or removed message leaves README telling
// operators to look for a line that never comes.
//
// Each quote is cut at README's placeholders (…, <path>, N, HH:MM:SS, the
// key=value fields, the errors of foreignMessages and of Go's os package);
// each piece of ten characters or more must occur in a string of some .go
// file of the programs (not tests, not the tests/ harness), where a format
// verb or an operand that is not a string constant stands for what README
// writes there (an interface name, an address, a count, the message of a
// wrapped error; see holds). A piece no one string holds may be an error
// chain put together by several functions: its parts either side of a
// ": " or "; " are then looked up each. The key of each field must be a
// string of the code, and a value in double quotes is checked as a
// message.
func TestREADMEMessagesExist(t *testing.T) {
	root, readme := repoREADME(t)
	code := codeStrings(t, root)
	table := troubleshootingQuotes(t, string(readme))
	prose := proseQuotes(string(readme))
	// A pattern that matched nothing would pass vacuously.
	if len(table) < 60 || len(prose) < 30 {
		t.Fatalf("found %d quotes in README's troubleshooting table and %d log lines and fields quoted elsewhere; expected far more (has the pattern or README's style changed?)", len(table), len(prose))
	}
	pieces, seen := 0, map[string]bool{}
	for _, q := range append(table, prose...) {
		if seen[q] {
			continue
		}
		seen[q] = true
		text, keys := cutFields(q)
		for _, key := range keys {
			if !code.key(key) {
				t.Errorf("README quotes %q with the field %s=, which no string of the code names", q, key)
			}
		}
		for _, piece := range placeholder.Split(text, -1) {
			piece = strings.Trim(piece, edge)
			if len(piece) < minPiece {
				continue
			}
			pieces++
			if !code.has(piece, map[string]bool{}) {
				t.Errorf("README quotes %q, and no string of the code holds %q (message reworded or gone?)", q, piece)
			}
		}
	}
	if pieces < 80 {
		t.Errorf("checked %d pieces of quoted messages; expected far more", pieces)
	}
	t.Logf("%d quotes from the troubleshooting table, %d from elsewhere, %d pieces checked", len(table), len(prose), pieces)
}

const (
	// minPiece is the shortest piece of a quoted message that is checked:
	// shorter ones ("now gone", "err") say too little to tell a message.
	minPiece = 10
	// minOwn is how much of a piece a string of the code must match with
	// its own text, not its wildcards.
	minOwn = 8
	// maxWildcard is how much text of a quote a format verb or a
	// non-constant operand may stand for.
	maxWildcard = 48
	// grams are the lengths of the substrings that pick which strings of
	// the code are matched against a piece at all: first those that share a
	// longer one with it, then, if none matched, those that share a shorter
	// one (as "cannot" in ": cannot "+what+": ").
	// edge is what is trimmed from the ends of a piece: the spaces and
	// punctuation left where a placeholder was cut out.
	edge = " ,;:()[]\""
)

// foreignMessages are texts in README's quotes that agentd does not write:
// errors of the kernel, of Go's crypto/tls and os/exec, of the etcd server,
// and gRPC's connection states, as they come wrapped in agentd's messages.
var foreignMessages = []string{
	"connect: connection refused",
	"certificate signed by unknown authority",
	"remote error: tls: expired certificate",
	"remote error: tls: bad certificate",
	"etcdserver: permission denied",
	"etcdserver: user name is empty",
	"authentication failed, invalid user ID or password",
	"user name is empty",
	"permission denied",
	`exec: "iptables": executable file not found in $PATH`,
	"no such file or directory",
	"address already in use",
	"no space left on device",
	"read-only file system",
	"etcdserver: mvcc: database space exceeded",
	"file exists",
	"operation not supported",
	"TRANSIENT_FAILURE",
}

var grams = []int{8, 6}

var (
	// placeholder is where README leaves out or stands in for text of a
	// message: an ellipsis, <a name>, N for a number, a time of day, a
	// foreign message or one of Go's os package (open /path).
	placeholder = regexp.MustCompile(`…|<[^<>]+>|\bN\b|HH:MM:SS|\b(?:open|read|write|stat|mkdir|rename|remove) (?:/|…)\S*|` + quoteAll(foreignMessages))
	// field is a key=value field of a structured log line as README quotes
	// it: key="value", key=[…], key=value.
	field = regexp.MustCompile(`(?:^|\s)([a-z][\w.]*)=(?:"([^"]*)"|\[[^\]]*\]|\S*)`)
	// fieldsOnly is a quote that begins with a field: `holder=…`.
	fieldsOnly = regexp.MustCompile(`^[a-z][\w.]*=`)
	// fence is a fenced block of README: commands and their output.
	fence = regexp.MustCompile("(?s)\n *```.*?\n *```")
	// row is a row of the troubleshooting table; its first cell.
	row = regexp.MustCompile("(?m)^\\| ((?:[^|`]|`[^`]*`)*)\\|")
	// span is text in backquotes.
	span = regexp.MustCompile("`([^`]+)`")
	// logged is a quote in prose that README says the agent logs or says:
	// after "logs", "log line", "says" and the like, within the clause.
	logged = regexp.MustCompile("(?:\\blogs?|\\blogged|\\blogging|\\bsays|\\bwarns)(?: [^`.;:()|]{0,40})? ?\\(?`([^`]+)`")
	// message is how a log line or error begins: a lowercase word, a word
	// in capitals, an ellipsis, or a quoted message followed by fields.
	message = regexp.MustCompile(`^(?:[a-z]|[A-Z]{2,}[ :.']|…|"[^"]+" [a-z]+=)`)
	// command is the first word of a command line README quotes.
	command = regexp.MustCompile(`^(?:ip|journalctl|kubectl|etcdctl|etcdutl|agentctl|systemctl|docker|nft|iptables|ss|kill|modprobe|make|go) `)
	// verb is a format verb of fmt.
	verb = regexp.MustCompile(`%[-+# 0]*(?:\[\d+\])?(?:\d+|\*)?(?:\.(?:\d+|\*))?[a-zA-Z]`)
)

// quoteAll is a regular expression that matches any of texts.
func quoteAll(texts []string) string {
	q := make([]string, len(texts))
	for i, s := range texts {
		q[i] = regexp.QuoteMeta(s)
	}
	return strings.Join(q, "|")
}

// troubleshootingQuotes are the quotes in the first column of README's
// troubleshooting table, less those of an endpoint, a flag or a command,
// and those of its other columns that read as a message: three words or
// more, beginning as a message does, not a command.
func troubleshootingQuotes(t *testing.T, readme string) []string {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n## Troubleshooting\n")
	if !ok {
		t.Fatal("README has no section ## Troubleshooting")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var quotes []string
	for _, line := range strings.Split(section, "\n") {
		r := row.FindStringSubmatch(line)
		if r == nil {
			continue
		}
		for _, s := range span.FindAllStringSubmatch(r[1], -1) {
			q := s[1]
			if strings.HasPrefix(q, "/") || strings.HasPrefix(q, "-") || command.MatchString(q) {
				continue
			}
			quotes = append(quotes, q)
		}
		for _, s := range span.FindAllStringSubmatch(line[len(r[0]):], -1) {
			if q := s[1]; strings.Count(q, " ") >= 2 && message.MatchString(q) && !command.MatchString(q) {
				quotes = append(quotes, q)
			}
		}
	}
	return quotes
}

// proseQuotes are quotes outside the troubleshooting table that README
// says the agent logs, and the quotes anywhere that are log fields
// (`holder=…`, `reason="…"`), with their line breaks made spaces.
func proseQuotes(readme string) []string {
	readme = fence.ReplaceAllString(readme, "\n")
	before, after, _ := strings.Cut(readme, "\n## Troubleshooting\n")
	_, after, _ = strings.Cut(after, "\n## ")
	var quotes []string
	for _, part := range []string{before, after} {
		for _, m := range logged.FindAllStringSubmatch(part, -1) {
			q := strings.Join(strings.Fields(m[1]), " ")
			if strings.Contains(q, " ") && message.MatchString(q) && !command.MatchString(q) {
				quotes = append(quotes, q)
			}
		}
	}
	for _, m := range span.FindAllStringSubmatch(readme, -1) {
		if q := strings.Join(strings.Fields(m[1]), " "); fieldsOnly.MatchString(q) {
			quotes = append(quotes, q)
		}
	}
	return quotes
}

// cutFields takes the key=value fields out of a quote: the text left, with
// a placeholder where each field was and the value of each field in double
// quotes between placeholders (a message too), and the keys.
func cutFields(q string) (string, []string) {
	var keys []string
	text := field.ReplaceAllStringFunc(q, func(f string) string {
		m := field.FindStringSubmatch(f)
		keys = append(keys, m[1])
		return " … " + m[2] + " … "
	})
	return text, keys
}

// wildcard stands, in a string of the code, for a format verb or an operand
// that is not a string constant. It is a byte no message holds.
const wildcard = 0

// strs are the strings of the code: each string literal, or each sum of
// strings ("a" + b + "c"), with constants resolved and wildcards for the
// rest.
type strs struct {
	all     []string
	byGram  map[string][]int
	literal map[string]bool
}

// codeStrings reads the strings of every .go file under root that is part
// of the programs: not a _test.go file, nor testdata, nor the tests/
// harness, whose strings are what tests expect, not what agentd prints.
func codeStrings(t *testing.T, root string) *strs {
	t.Helper()
	c := &strs{byGram: map[string][]int{}, literal: map[string]bool{}}
	fset := token.NewFileSet()
	pkgFiles := map[string][]*ast.File{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bin" || d.Name() == "testdata" || path == filepath.Join(root, "tests")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		pkgFiles[filepath.Dir(path)] = append(pkgFiles[filepath.Dir(path)], f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, files := range pkgFiles {
		consts := stringConsts(files)
		var visit func(n ast.Node) bool
		visit = func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				if s, ok := formatted(call, consts); ok {
					c.add(s)
				}
			}
			e, ok := n.(ast.Expr)
			if !ok || !isString(e, consts) {
				return true
			}
			var b strings.Builder
			sum(e, consts, &b, func(other ast.Expr) { ast.Inspect(other, visit) })
			c.add(b.String())
			return false
		}
		for _, f := range files {
			ast.Inspect(f, visit)
			ast.Inspect(f, func(n ast.Node) bool {
				if l, ok := n.(*ast.BasicLit); ok && l.Kind == token.STRING {
					if s, err := strconv.Unquote(l.Value); err == nil {
						c.literal[s] = true
					}
				}
				return true
			})
		}
	}
	if len(c.all) < 1000 {
		t.Fatalf("found %d strings in the code; expected far more", len(c.all))
	}
	return c
}

// formatted is what call prints when its arguments are a format and what
// it formats (fmt.Errorf, log.Info(fmt.Sprintf(…)), …) and some of those
// are constants or errors.New errors: the format with their values in
// place of their verbs ("%w: %s was %s" with errExternalInterfaceChanged:
// "external interface changed: %s was %s"). ok is false when no argument
// is one of those.
func formatted(call *ast.CallExpr, consts map[string]string) (s string, ok bool) {
	for i, arg := range call.Args {
		if !isString(arg, consts) {
			continue
		}
		var b strings.Builder
		sum(arg, consts, &b, func(ast.Expr) {})
		format, args := b.String(), call.Args[i+1:]
		var out strings.Builder
		last := 0
		for _, at := range verb.FindAllStringIndex(format, -1) {
			v := format[at[0]:at[1]]
			if len(args) == 0 || strings.Contains(v, "[") || strings.Contains(v, "*") {
				return "", false
			}
			out.WriteString(format[last:at[0]])
			last = at[1]
			value, known := consts[constKey(args[0])]
			if id, isID := args[0].(*ast.Ident); isID && !known {
				value, known = consts[id.Name+".Error()"]
			}
			if known && strings.ContainsAny(v[len(v)-1:], "svw") {
				out.WriteString(strings.ReplaceAll(value, "%", "%%"))
				ok = true
			} else {
				out.WriteString(v)
			}
			args = args[1:]
		}
		out.WriteString(format[last:])
		return out.String(), ok
	}
	return "", false
}

// add records s, a string of the code, with its format verbs made
// wildcards and its tabs spaces (README shows agentctl's tab-separated
// columns as the terminal does).
func (c *strs) add(s string) {
	s = strings.ReplaceAll(s, "\t", " ") // agentctl's columns
	s = verb.ReplaceAllString(s, string(rune(wildcard)))
	s = strings.ReplaceAll(s, "%%", "%")
	i := len(c.all)
	c.all = append(c.all, s)
	for _, gram := range grams {
		for j := 0; j+gram <= len(s); j++ {
			g := s[j : j+gram]
			if ids := c.byGram[g]; len(ids) == 0 || ids[len(ids)-1] != i {
				c.byGram[g] = append(ids, i)
			}
		}
	}
}

// stringConsts maps the names of a package's string constants (those
// declared as a literal or a sum of them, at any level) to their values,
// and name+".Error()" to the message of each error declared as
// errors.New(a constant). A name declared twice with different values
// stays out.
func stringConsts(files []*ast.File) map[string]string {
	consts := map[string]string{}
	clash := map[string]bool{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			d, ok := n.(*ast.GenDecl)
			if !ok || (d.Tok != token.CONST && d.Tok != token.VAR) {
				return true
			}
			for _, spec := range d.Specs {
				vs := spec.(*ast.ValueSpec)
				if len(vs.Values) != len(vs.Names) {
					continue
				}
				for i, name := range vs.Names {
					v, key := vs.Values[i], name.Name
					if d.Tok == token.VAR {
						call, ok := v.(*ast.CallExpr)
						if !ok || len(call.Args) != 1 || !isCall(call, "errors", "New") {
							continue
						}
						v, key = call.Args[0], key+".Error()"
					}
					var b strings.Builder
					if !isString(v, consts) || !sum(v, consts, &b, func(ast.Expr) {}) {
						continue
					}
					if old, ok := consts[key]; ok && old != b.String() {
						clash[key] = true
					}
					consts[key] = b.String()
				}
			}
			return true
		})
	}
	for name := range clash {
		delete(consts, name)
	}
	return consts
}

// isCall says whether call calls x.sel.
func isCall(call *ast.CallExpr, x, sel string) bool {
	f, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || f.Sel.Name != sel {
		return false
	}
	id, ok := f.X.(*ast.Ident)
	return ok && id.Name == x
}

// constKey is the key of e in the map of stringConsts: the name of a
// constant, or name.Error() for the message of an error; "" for any other
// expression.
func constKey(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.CallExpr:
		if f, ok := e.Fun.(*ast.SelectorExpr); ok && len(e.Args) == 0 {
			if id, ok := f.X.(*ast.Ident); ok && isCall(e, id.Name, "Error") {
				return id.Name + ".Error()"
			}
		}
	}
	return ""
}

// isString says whether e is a string literal, a string constant, or a sum
// with one of them in it.
func isString(e ast.Expr, consts map[string]string) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		return e.Kind == token.STRING
	case *ast.Ident, *ast.CallExpr:
		_, ok := consts[constKey(e)]
		return ok
	case *ast.ParenExpr:
		return isString(e.X, consts)
	case *ast.BinaryExpr:
		return e.Op == token.ADD && (isString(e.X, consts) || isString(e.Y, consts))
	}
	return false
}

// sum writes the value of e to b, with a wildcard for each operand that is
// not a string constant, which it hands to other, and says whether e was
// constant throughout.
func sum(e ast.Expr, consts map[string]string, b *strings.Builder, other func(ast.Expr)) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		if s, err := strconv.Unquote(e.Value); err == nil && e.Kind == token.STRING {
			b.WriteString(s)
			return true
		}
	case *ast.Ident, *ast.CallExpr:
		if s, ok := consts[constKey(e)]; ok {
			b.WriteString(s)
			return true
		}
	case *ast.ParenExpr:
		return sum(e.X, consts, b, other)
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			x := sum(e.X, consts, b, other)
			return sum(e.Y, consts, b, other) && x
		}
	}
	b.WriteByte(wildcard)
	other(e)
	return false
}

// key says whether the code names the key of a log field: a string equal
// to it, or for a key in a group (dropped.unknownPeer) one equal to the
// group's prefix and one to the rest.
func (c *strs) key(k string) bool {
	group, name, ok := strings.Cut(k, ".")
	return c.literal[k] || ok && c.literal[group+"."] && c.literal[name]
}

// has says whether a string of the code holds piece, or else whether piece
// is an error chain whose parts either side of some ": " or "; " it has
// (the part after, with the separator or without: reason += ": cannot " +
// what); a part shorter than minPiece must be a whole string of the code,
// or hold no letter. memo holds the answers so far for parts of one piece.
func (c *strs) has(piece string, memo map[string]bool) bool {
	if v, ok := memo[piece]; ok {
		return v
	}
	memo[piece] = false // no cycles: parts are shorter
	v := c.holds(piece, memo)
	part := func(p, sep string) bool {
		p = strings.Trim(p, edge)
		if len(p) < minPiece {
			return c.literal[p] || !strings.ContainsFunc(p, unicode.IsLetter)
		}
		return c.has(p, memo) || sep != "" && c.holds(sep+p, memo)
	}
	for i := 0; !v && i+2 <= len(piece); i++ {
		if sep := piece[i : i+2]; sep == ": " || sep == "; " {
			v = part(piece[:i], "") && part(piece[i+2:], sep)
		}
	}
	memo[piece] = v
	return v
}

// holds says whether some string of the code matches piece: piece is a
// part of what the string prints when each wildcard stands for some text,
// and at least minOwn bytes of piece are the code's text. A wildcard
// stands for at most maxWildcard bytes: a value (one word, or two with a
// digit: "index 4"), a whole string of the code of three words or more
// (the message of a wrapped error), or, inside piece, any text the code
// has ("cannot "+what+"; retrying" holds "cannot read the network config;
// retrying" because "read the network config" is a string of the code).
// The ends of piece are held to the first two: README cuts a message after
// a value or before one, and text an end left to a wildcard is not
// compared with anything. A whole string of the code a wildcard stands for
// counts as the code's text; a value or a part of a string does not (else
// a string of wildcards, "%s %s %s", would hold any words found apart).
func (c *strs) holds(piece string, memo map[string]bool) bool {
	known := map[[2]int]int{}
	stands := func(i, j int) int {
		v, ok := known[[2]int{i, j}]
		if !ok {
			v = c.stands(piece, i, j, memo)
			known[[2]int{i, j}] = v
		}
		return v
	}
	seen := map[int]bool{}
	for _, gram := range grams {
		for j := 0; j+gram <= len(piece); j++ {
			for _, i := range c.byGram[piece[j:j+gram]] {
				if seen[i] {
					continue
				}
				seen[i] = true
				if matchOwn(piece, c.all[i], stands) >= minOwn {
					return true
				}
			}
		}
	}
	return false
}

// stands says what a wildcard standing for piece[i:j] adds to the bytes of
// piece that are the code's text (see holds): j-i for a whole string of
// the code, 0 for a value or other text of the code, -1 if it may not
// stand for it. Text inside piece is looked up only if it is whole words.
func (c *strs) stands(piece string, i, j int, memo map[string]bool) int {
	sub := piece[i:j]
	spaces := strings.Count(strings.TrimSpace(sub), " ")
	trimmed := strings.Trim(sub, edge)
	end := i == 0 || j == len(piece)
	switch {
	case spaces == 0 || spaces == 1 && strings.ContainsFunc(trimmed, unicode.IsDigit):
		return 0
	case spaces >= 2 && c.literal[trimmed]:
		return len(sub)
	case end || len(trimmed) < minPiece || len(sub) == len(piece):
	case wordChar(piece[i-1]) && wordChar(piece[i]) || wordChar(piece[j-1]) && wordChar(piece[j]):
	case c.has(trimmed, memo):
		return 0
	}
	return -1
}

// wordChar says whether b is a byte of a word.
func wordChar(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b >= 0x80
}

// matchOwn aligns piece with a part of s, a string of the code with
// wildcards, and returns the most bytes of piece that s's own text can
// account for, or -1 if piece cannot be aligned at all. A wildcard stands
// for at most maxWildcard bytes, piece[i:j], and for those only if
// stands(i, j) says so, adding what it says.
func matchOwn(piece, s string, stands func(i, j int) int) int {
	n := len(piece)
	// cur[i]: the most own bytes with piece[:i] aligned up to the present
	// byte of s, -1 if it cannot be. Each byte of s takes piece on from
	// cur to next; piece may begin at any of them.
	cur, next := make([]int, n+1), make([]int, n+1)
	for i := range cur {
		cur[i] = -1
	}
	top := -1
	for j := 0; j <= len(s); j++ {
		cur[0] = max(cur[0], 0)
		top = max(top, cur[n])
		if j == len(s) {
			break
		}
		for i := range next {
			next[i] = -1
		}
		if s[j] != wildcard && s[j] != piece[0] && slices.Max(cur[1:]) < 0 {
			cur, next = next, cur // only a new beginning, which this byte is not
			continue
		}
		for i, v := range cur[:n] {
			switch {
			case v < 0:
			case s[j] == wildcard:
				for k := 0; k <= maxWildcard && i+k <= n; k++ {
					if w := stands(i, i+k); w >= 0 && next[i+k] < v+w {
						next[i+k] = v + w
					}
				}
			case s[j] == piece[i]:
				next[i+1] = max(next[i+1], v+1)
			}
		}
		cur, next = next, cur
	}
	return top
}
