package dist

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// makeCall is make with its arguments as README shows it run: `make
	// soak SOAK_BACKEND=udp`, `make GO=/path/to/go`.
	makeCall = regexp.MustCompile(`(?:^|[\s;&|(])(make)((?:[ \t]+[A-Za-z0-9_-]+(?:=\S*)?)+)`)
	// makeTarget and makeVar are a rule and a variable the Makefile defines.
	makeTarget = regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*):`)
	makeVar    = regexp.MustCompile(`(?m)^([A-Z][A-Z0-9_]*) *[?:]?=`)
	// progCall is agentd or agentctl run with its words up to the end of
	// the command (bin/agentd and /usr/local/bin/agentctl too, not
	// agentd-cni or agentd.env).
	progCall = regexp.MustCompile(`(?:^|[\s;&|(/])(agentd|agentctl)((?:[ \t]+[^\s;&|#)]+)*)`)
	// helpFlag and helpCommand are a flag and a subcommand as cobra's
	// --help lists them.
	helpFlag    = regexp.MustCompile(`(?m)^\s+(?:-[a-zA-Z], )?--([a-z][a-z0-9-]*)`)
	helpCommand = regexp.MustCompile(`^  ([a-z][a-z0-9-]*) `)
	// atCommand ends the text before a program's name where a shell reads
	// a command name: the line's start (after a prompt), a separator,
	// kubectl exec's "--", sudo, a variable set for the command, and a
	// directory (bin/agentctl).
	atCommand = regexp.MustCompile(`(?:^\s*(?:[$#]\s*)?|[;&|(]\s*|\s--\s+|sudo\s+|\w+=\S*\s+)[\w./-]*$`)
	// startCommand is atCommand at the start of a command or line only:
	// make, in README, is run so, and a message may say "…; make the file".
	startCommand = regexp.MustCompile(`^\s*(?:[$#]\s*)?(?:sudo\s+)?(?:\w+=\S*\s+)*[\w./-]*$`)
	// commandWord is a word that reads as a subcommand's name.
	commandWord = regexp.MustCompile(`^[a-z][a-z-]*$`)
)

// readmeCommands is what README shows as something to run: each line of
// its code blocks, and each backticked span of the rest (one may go on
// over a line's end, within its paragraph).
func readmeCommands(readme string) []string {
	var out, para []string
	block := false
	spans := func() {
		parts := strings.Split(strings.Join(para, "\n"), "`")
		for i := 1; i < len(parts)-1; i += 2 {
			out = append(out, parts[i])
		}
		para = para[:0]
	}
	for line := range strings.SplitSeq(readme, "\n") {
		switch {
		case strings.HasPrefix(strings.TrimSpace(line), "```"):
			spans()
			block = !block
		case block:
			out = append(out, line)
		case strings.TrimSpace(line) == "":
			spans()
		default:
			para = append(para, line)
		}
	}
	spans()
	return out
}

// commandWords is the words of a command as a program reads them, ending
// at a bare "--" (what follows is another program's: kubectl exec … --
// agentctl …) or at a word that ends a sentence of a quoted message.
func commandWords(args string) []string {
	var out []string
	for w := range strings.FieldsSeq(args) {
		if w == "--" {
			break
		}
		trimmed := strings.TrimRight(w, `.,;:"'`)
		if trimmed != "" {
			out = append(out, trimmed)
		}
		if trimmed != w {
			break
		}
	}
	return out
}

// flagName is the name of a long flag word (--timeout=2s is timeout), or
// "" for a word that is not one.
func flagName(w string) string {
	if !strings.HasPrefix(w, "--") || len(w) < 3 {
		return ""
	}
	name, _, _ := strings.Cut(w[2:], "=")
	return name
}

// TestREADMEMakeCalls: every `make <target>` README shows is a target of
// the Makefile, and every VAR=value it passes is a variable the Makefile
// reads. A target renamed or removed leaves an operator's first command
// failing with "No rule to make target".
func TestREADMEMakeCalls(t *testing.T) {
	root, readme := repoREADME(t)
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets, vars := map[string]bool{}, map[string]bool{}
	for _, m := range makeTarget.FindAllStringSubmatch(string(mk), -1) {
		targets[m[1]] = true
	}
	for _, m := range makeVar.FindAllStringSubmatch(string(mk), -1) {
		vars[m[1]] = true
	}
	calls := 0
	for _, cmd := range readmeCommands(string(readme)) {
		for _, loc := range makeCall.FindAllStringSubmatchIndex(cmd, -1) {
			if !startCommand.MatchString(cmd[:loc[2]]) {
				continue // a message: "…; make the file … root's"
			}
			shown := cmd[loc[2]:loc[1]]
			calls++
			for _, w := range strings.Fields(cmd[loc[4]:loc[5]]) {
				if name, _, ok := strings.Cut(w, "="); ok {
					if !vars[name] {
						t.Errorf("README runs `%s`: the Makefile reads no variable %s", shown, name)
					}
				} else if !targets[w] {
					t.Errorf("README runs `%s`: the Makefile has no target %s", shown, w)
				}
			}
		}
	}
	// A pattern that matched nothing would pass vacuously.
	if len(targets) < 10 || calls < 30 {
		t.Errorf("found %d Makefile targets and %d make commands in README; expected far more (has the pattern or the style changed?)", len(targets), calls)
	}
}

// agentctlHelp is the subcommands and flags (its own and the global ones)
// of agentctl's command path, as its --help lists them.
type agentctlHelp struct {
	commands map[string]bool
	flags    map[string]bool
}

// TestREADMEProgramCalls: every agentctl command README shows names
// subcommands agentctl has and only flags they take, and every agentd
// command only flags agentd takes (TestREADMEFlags checks the flags table;
// this, the commands of the examples and instructions). A subcommand or
// flag renamed leaves an operator's copied command failing with "unknown
// command" or "unknown flag".
func TestREADMEProgramCalls(t *testing.T) {
	root, readme := repoREADME(t)
	bin := filepath.Join(t.TempDir(), "agentctl")
	build := exec.Command("go", "build", "-o", bin, "./run/agentctl")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./run/agentctl: %v\n%s", err, out)
	}
	helps := map[string]agentctlHelp{}
	help := func(path []string) agentctlHelp {
		key := strings.Join(path, " ")
		if h, ok := helps[key]; ok {
			return h
		}
		out, err := exec.Command(bin, append(path, "--help")...).CombinedOutput()
		if err != nil {
			t.Fatalf("agentctl %s --help: %v\n%s", key, err, out)
		}
		h := agentctlHelp{commands: map[string]bool{}, flags: map[string]bool{}}
		for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
			h.flags[m[1]] = true
		}
		_, cmds, _ := strings.Cut(string(out), "\nAvailable Commands:\n")
		cmds, _, _ = strings.Cut(cmds, "\n\n")
		for line := range strings.SplitSeq(cmds, "\n") {
			if m := helpCommand.FindStringSubmatch(line); m != nil {
				h.commands[m[1]] = true
			}
		}
		helps[key] = h
		return h
	}
	if h := help(nil); len(h.commands) < 5 || len(h.flags) < 8 {
		t.Fatalf("agentctl --help lists %d commands and %d flags; expected more (has cobra's help changed?)", len(h.commands), len(h.flags))
	}

	src, err := os.ReadFile(filepath.Join(root, "run", "agentd", "flags.go"))
	if err != nil {
		t.Fatal(err)
	}
	agentdFlags := map[string]bool{"help": true}
	for _, m := range definedFlag.FindAllStringSubmatch(string(src), -1) {
		agentdFlags[m[1]+m[2]] = true
	}

	calls := map[string]int{}
	for _, cmd := range readmeCommands(string(readme)) {
		for _, loc := range progCall.FindAllStringSubmatchIndex(cmd, -1) {
			prog, words := cmd[loc[2]:loc[3]], commandWords(cmd[loc[4]:loc[5]])
			// Where the name is not run (a message: "…, which agentctl
			// cannot know"), a word after it need not be a subcommand.
			run := atCommand.MatchString(cmd[:loc[2]])
			shown := strings.TrimSpace(prog + " " + strings.Join(words, " "))
			calls[prog]++
			if prog == "agentd" {
				for _, w := range words {
					if name := flagName(w); name != "" && !agentdFlags[name] {
						t.Errorf("README runs `%s`: agentd takes no --%s", shown, name)
					}
				}
				continue
			}
			var path []string
			h := help(nil)
			args := false  // past the subcommands: the rest are arguments and flags
			value := false // the word may be the value of the flag before it
			for _, w := range words {
				if name := flagName(w); name != "" {
					if !h.flags[name] {
						t.Errorf("README runs `%s`: agentctl %s takes no --%s", shown, strings.Join(path, " "), name)
					}
					value = !strings.Contains(w, "=")
					continue
				}
				wasValue := value
				value = false
				if args || strings.HasPrefix(w, "-") || (wasValue && !h.commands[w]) {
					continue
				}
				if h.commands[w] {
					path = append(path, w)
					h = help(path)
					continue
				}
				if run && len(h.commands) > 0 && commandWord.MatchString(w) {
					t.Errorf("README runs `%s`: agentctl %s has no subcommand %s", shown, strings.Join(path, " "), w)
				}
				args = true
			}
		}
	}
	if calls["agentctl"] < 50 || calls["agentd"] < 20 {
		t.Errorf("found %d agentctl and %d agentd commands in README; expected far more (has the pattern or README's style changed?)", calls["agentctl"], calls["agentd"])
	}
}

// TestREADMEPathsExist: every file or directory of the repository README
// names in a command or in backticks (dist/systemd/agentd.service,
// tests/kube/build-kube.sh), or links to (results/scale/results.md), exists, <…> and *
// standing for any name. The Source layout table, whose paths are relative
// to its rows, is TestREADMESourceLayout's. A file moved or removed leaves
// an install line failing with "No such file or directory".
func TestREADMEPathsExist(t *testing.T) {
	root, readme := repoREADME(t)
	text, _, _ := strings.Cut(string(readme), "\n## Source layout\n")
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var tops []string
	for _, e := range entries {
		// bin/ is build output, not in git.
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && e.Name() != "bin" {
			tops = append(tops, regexp.QuoteMeta(e.Name()))
		}
	}
	repoPath := regexp.MustCompile(`(?:^|[\s(="'])((?:` + strings.Join(tops, "|") + `)/[\w./<>*…-]*)`)
	placeholder := regexp.MustCompile(`<[^>/]*>|…`)
	// A link to a file of the repository: [the report](results/scale/results.md).
	link := regexp.MustCompile(`\]\(([^)#:\s]+)\)`)
	var paths []string
	for _, cmd := range readmeCommands(text) {
		for _, m := range repoPath.FindAllStringSubmatch(cmd, -1) {
			paths = append(paths, strings.TrimRight(m[1], "."))
		}
	}
	for _, m := range link.FindAllStringSubmatch(string(readme), -1) {
		paths = append(paths, m[1])
	}
	cited := 0
	seen := map[string]bool{}
	for _, p := range paths {
		if seen[p] {
			continue
		}
		seen[p] = true
		cited++
		pattern := placeholder.ReplaceAllString(p, "*")
		matches, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(pattern)))
		if err != nil {
			t.Errorf("README names %s: %v", p, err)
		} else if len(matches) == 0 {
			t.Errorf("README names %s, which the repository does not hold (moved or removed?)", p)
		}
	}
	if cited < 20 {
		t.Errorf("found %d paths of the repository in README; expected more (has the pattern or README's style changed?)", cited)
	}
}

// TestREADMEGoTestCalls: every go test command README shows names packages
// that hold tests, and its -run and -bench patterns each match a test or
// benchmark of them. A benchmark renamed leaves a copied command running
// nothing, and passing: go test says only "no tests to run".
func TestREADMEGoTestCalls(t *testing.T) {
	root, readme := repoREADME(t)
	goTest := regexp.MustCompile(`(?:^|[\s;&|(])go\s+test((?:\s+[^\s;&|#)` + "`" + `]+)*)`)
	calls := 0
	for _, cmd := range readmeCommands(string(readme)) {
		for _, m := range goTest.FindAllStringSubmatch(cmd, -1) {
			calls++
			shown := strings.Join(strings.Fields(m[0]), " ")
			words := strings.Fields(m[1])
			var pkgs []string
			patterns := map[string]string{} // -run or -bench: its pattern
			for i, w := range words {
				if w == "-args" {
					break
				}
				switch {
				case strings.HasPrefix(w, "./"):
					pkgs = append(pkgs, w)
				case (w == "-run" || w == "-bench") && i+1 < len(words):
					patterns[w] = strings.Trim(words[i+1], `'"`)
				}
			}
			funcs := map[string]bool{}
			for _, pkg := range pkgs {
				dir := filepath.Join(root, filepath.FromSlash(strings.TrimSuffix(pkg, "...")))
				files, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
				if strings.HasSuffix(pkg, "...") {
					files, _ = filepath.Glob(filepath.Join(dir, "*", "*_test.go"))
				}
				if len(files) == 0 && !strings.HasSuffix(pkg, "...") {
					t.Errorf("README runs `%s`: %s holds no tests", shown, pkg)
				}
				for _, f := range files {
					src, err := os.ReadFile(f)
					if err != nil {
						t.Fatal(err)
					}
					for _, d := range definedTest.FindAllSubmatch(src, -1) {
						funcs[string(d[1])] = true
					}
				}
			}
			for flag, pattern := range patterns {
				if pattern == "^$" || strings.Contains(pattern, "…") || len(pkgs) == 0 {
					continue
				}
				re, err := regexp.Compile(pattern)
				if err != nil {
					t.Errorf("README runs `%s`: %s %q: %v", shown, flag, pattern, err)
					continue
				}
				prefix := map[string]string{"-run": "Test", "-bench": "Benchmark"}[flag]
				found := false
				for name := range funcs {
					found = found || (strings.HasPrefix(name, prefix) && re.MatchString(name))
				}
				if !found {
					t.Errorf("README runs `%s`: %s %s matches no %s function of %s", shown, flag, pattern, prefix, strings.Join(pkgs, " "))
				}
			}
		}
	}
	if calls < 4 {
		t.Errorf("found %d go test commands in README; expected more (has the pattern or README's style changed?)", calls)
	}
}
