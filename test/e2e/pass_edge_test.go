package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

// Users whose attributes.discord is missing, malformed, of another type, has a numeric or
// null id, or names another member of the same batch: the batch read must not take any of
// them for a sign that Authentik ignored the filter, each is read one by one or from the
// batch, and every one ends in line with its other attributes intact.
func TestSyncAll_OddDiscordAttributes(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	odd := []string{
		``, // no attributes.discord at all
		`"discord":"oops"`,
		`"discord":[]`,
		`"discord":{"id":null,"roles":[]}`,
		`"discord":{"id":ID,"username":"x","roles":[]}`, // the member's ID as a number
		`"discord":{"id":"OTHER","username":"x","roles":[]}`,
		`"discord":{"ID":"ID","username":"x","roles":[]}`,
	}
	const normal = 9
	n := len(odd) + normal
	ids := make([]string, n)
	pks := make([]int32, n)
	for i := range n {
		ids[i] = strconv.Itoa(310000000000000000 + i)
	}
	for i := range n {
		attrs := `{"locale":"de"}`
		if i < len(odd) && odd[i] != "" {
			a := strings.ReplaceAll(odd[i], "OTHER", ids[len(odd)]) // a normal member's ID
			a = strings.ReplaceAll(a, "ID", ids[i])
			attrs = `{"locale":"de",` + a + `}`
		}
		pks[i] = e.ak.AddUser(authentikstub.User{Username: "o" + strconv.Itoa(i), IsActive: true,
			Type: "external", Attributes: json.RawMessage(attrs)})
		e.ak.AddConnection("discord", pks[i], ids[i])
	}
	setRoles := func(roles ...string) {
		for i := range n {
			m := discordstub.ExampleMember()
			m.User.ID, m.User.Username, m.User.Avatar = ids[i], "o"+strconv.Itoa(i), nil
			m.Roles = roles
			mustSetMember(t, e, m)
		}
	}
	e.vars = append(e.vars, "BRIDGE_MAX_REMOVAL_SHARE=1")
	setRoles(roleMember)
	// Every odd user gets a proper attributes.discord in the first pass, the normal ones too
	// (they have none yet).
	if out, errOut, code := e.cli("sync", "--all"); code != 0 {
		t.Fatalf("first pass exited %d:\n%s\n%s", code, out, errOut)
	}
	// Now break the odd ones again, as an admin editing by hand would, and change everyone.
	for i := range len(odd) {
		if odd[i] == "" {
			continue
		}
		a := strings.ReplaceAll(odd[i], "OTHER", ids[len(odd)])
		a = strings.ReplaceAll(a, "ID", ids[i])
		e.ak.SetUserAttributes(pks[i], json.RawMessage(`{"locale":"de",`+a+`}`))
	}
	setRoles(roleMember, roleAdmin)
	e.ak.ResetCounts()
	out, errOut, code := e.cli("sync", "--all")
	if code != 0 {
		t.Fatalf("second pass exited %d:\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(errOut, "ignored the attributes filter") {
		t.Errorf("a user with an odd attributes.discord was taken for an ignored filter:\n%s",
			errOut)
	}
	c := e.ak.Counts()
	const one, list = "GET /api/v3/core/users/{id}/", "GET /api/v3/core/users/"
	// The odd users the filter cannot find are read one by one; "OTHER" is found under the
	// normal member's ID, which is in the same batch.
	t.Logf("second pass: %d batch lists, %d single reads, %d writes", c.ByRoute[list],
		c.ByRoute[one], c.Writes)
	if c.ByRoute[list] != (n+7)/8 || c.ByRoute[one] > len(odd) {
		t.Errorf("%d batch lists and %d single reads; want %d and at most %d", c.ByRoute[list],
			c.ByRoute[one], (n+7)/8, len(odd))
	}
	for i, pk := range pks {
		attrs := string(e.ak.UserAttributes(pk))
		if !strings.Contains(attrs, `"locale":"de"`) {
			t.Errorf("user %d lost its locale: %s", i, attrs)
		}
		if !strings.Contains(attrs, `"id":"`+ids[i]+`"`) ||
			!strings.Contains(strings.Join(e.ak.UserGroupNames(pk), ","), "makerspace-admins") {
			t.Errorf("user %d (%s) not in line: %s, groups %v", i, odd[min(i, len(odd)-1)],
				attrs, e.ak.UserGroupNames(pk))
		}
	}
}

// SIGTERM in the middle of `bridge sync --all`'s apply phase: the command stops soon, says
// that the pass did not finish and how many members it never reached, and exits 1; the next
// pass brings everyone in line.
func TestSyncAll_Interrupted(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	const n, base = 80, 320000000000000000
	pks := seedStale(t, e, n, base)
	e.ak.SetLatency(20 * time.Millisecond)
	e.ak.ResetCounts()
	code, out, errOut, took := runAndTerm(t, e, func() bool {
		return e.ak.Counts().Writes >= 10 // the pass is writing
	}, "sync", "--all")
	t.Logf("exit %d after %v; %d writes\nstdout:\n%s\nstderr:\n%s", code, took,
		e.ak.Counts().Writes, out, lastLines(errOut, 15))
	if code == 0 {
		t.Errorf("interrupted pass exited 0")
	}
	if took > 5*time.Second {
		t.Errorf("pass took %v to stop after SIGTERM", took)
	}
	// Per-member "context canceled" errors do not count: they name the syncs in flight,
	// not the members the pass never got to.
	if !strings.Contains(out, "interrupted: ") ||
		!strings.Contains(out, "out-of-date member(s) not reached") ||
		!strings.Contains(errOut, "full pass interrupted with") {
		t.Errorf("nothing in the output says the pass was cut short before the rest of the " +
			"out-of-date members")
	}

	e.ak.SetLatency(0)
	if out, errOut, code := e.cli("sync", "--all"); code != 0 {
		t.Fatalf("pass after the interrupted one exited %d:\n%s\n%s", code, out, errOut)
	}
	for i, pk := range pks {
		attrs := string(e.ak.UserAttributes(pk))
		if !strings.Contains(attrs, `"locale":"de"`) ||
			!strings.Contains(attrs, strconv.Itoa(base+i)) {
			t.Errorf("user r%d after the next pass: %s", i, attrs)
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// seedStale adds n linked members that are all out of date (no attributes.discord yet).
func seedStale(t *testing.T, e *env, n int, base int) []int32 {
	t.Helper()
	pks := make([]int32, n)
	for i := range n {
		id := strconv.Itoa(base + i)
		pks[i] = e.ak.AddUser(authentikstub.User{Username: "r" + strconv.Itoa(i), IsActive: true,
			Type: "external", Attributes: json.RawMessage(`{"locale":"de"}`)})
		e.ak.AddConnection("discord", pks[i], id)
		m := discordstub.ExampleMember()
		m.User.ID, m.User.Username, m.User.Avatar = id, "r"+strconv.Itoa(i), nil
		m.Roles = []string{roleMember}
		mustSetMember(t, e, m)
	}
	return pks
}

// runAndTerm runs the bridge with args, sends SIGTERM once ready() holds, and returns the
// exit code, the outputs and how long it took to stop.
func runAndTerm(t *testing.T, e *env, ready func() bool, args ...string) (int, string,
	string, time.Duration) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ()[:0:0], e.vars...)
	var o, er syncBuffer
	cmd.Stdout, cmd.Stderr = &o, &er
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !ready() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	sent := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return code, o.String(), er.String(), time.Since(sent)
}

// SIGTERM while `bridge sync --all` still lists Authentik's groups: nothing was read, so the
// summary line must not claim a guild of 0 members with nothing out of date.
func TestSyncAll_InterruptedWhileListing(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	seedStale(t, e, 10, 330000000000000000)
	e.ak.SetLatency(400 * time.Millisecond)
	e.ak.ResetCounts()
	start := time.Now()
	code, out, errOut, took := runAndTerm(t, e, func() bool {
		return time.Since(start) > 600*time.Millisecond
	}, "sync", "--all")
	t.Logf("exit %d after %v\nstdout:\n%s\nstderr:\n%s", code, took, out,
		lastLines(errOut, 8))
	if code == 0 {
		t.Errorf("exit 0 for a pass interrupted while listing")
	}
	if strings.Contains(out, "members 0, linked users 0, out of date 0") {
		t.Errorf("a pass cut short before it listed anything prints a summary of an empty, "+
			"current guild:\n%s", out)
	}
	if !strings.Contains(errOut, "full pass interrupted while listing") {
		t.Errorf("stderr does not say the pass was interrupted while listing")
	}
}

// SIGTERM in the middle of a dry run: it says it is a dry run that changed nothing, and
// that it did not plan everything.
func TestSyncAll_DryRunInterrupted(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	seedStale(t, e, 80, 340000000000000000)
	e.ak.SetLatency(20 * time.Millisecond)
	e.ak.ResetCounts()
	const list = "GET /api/v3/core/users/"
	code, out, errOut, took := runAndTerm(t, e, func() bool {
		return e.ak.Counts().ByRoute[list] >= 3
	}, "sync", "--all", "--dry-run")
	t.Logf("exit %d after %v\nstdout (last lines):\n%s\nstderr:\n%s", code, took,
		lastLines(out, 4), lastLines(errOut, 6))
	if c := e.ak.Counts(); c.Writes != 0 {
		t.Errorf("a dry run wrote %d times", c.Writes)
	}
	if code == 0 {
		t.Errorf("interrupted dry run exited 0")
	}
	if !strings.Contains(out, "dry run: nothing was changed") ||
		!strings.Contains(out, "out-of-date member(s) not planned") {
		t.Errorf("interrupted dry run does not say it changed nothing and planned part")
	}
	if strings.Contains(out, "next pass") {
		t.Errorf("a dry run promises that the next pass gets to the members it did not plan; " +
			"nothing will, unless someone runs a pass that applies")
	}
}

// SIGTERM to `bridge serve` while its first full pass applies: it stops within seconds,
// exits 0, logs the interrupted pass as a warning (not as a failed pass) before it logs that
// it stopped, and does not run avatar collection for it; the next start finishes the work.
func TestServe_TerminatedMidPass(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	pks := seedStale(t, e, 120, 350000000000000000)
	e.ak.SetLatency(20 * time.Millisecond)
	e.launch("BRIDGE_RESYNC_INTERVAL=1h", "BRIDGE_GATEWAY=false")
	deadline := time.Now().Add(30 * time.Second)
	for e.ak.Counts().Writes < 10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	proc := e.proc
	sent := time.Now()
	_ = proc.Process.Signal(syscall.SIGTERM)
	err := proc.Wait()
	e.proc = nil
	took := time.Since(sent)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	logs := e.logs.String()
	t.Logf("exit %d after %v, %d writes; log (last lines):\n%s", code, took,
		e.ak.Counts().Writes, lastLines(logs, 12))
	if code != 0 {
		t.Errorf("serve exited %d after SIGTERM", code)
	}
	if took > 5*time.Second {
		t.Errorf("serve took %v to stop", took)
	}
	if !strings.Contains(logs, "full pass interrupted") {
		t.Errorf("no \"full pass interrupted\" in the log")
	}
	if last := lastLines(logs, 1); !strings.Contains(last, "bridge stopped") {
		t.Errorf("last log line %q, want \"bridge stopped\" after everything else", last)
	}
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "level=ERROR") {
			t.Errorf("error logged on a clean shutdown: %s", l)
		}
		if strings.Contains(l, "avatar collection") || strings.Contains(l, "collected") {
			t.Errorf("avatar collection after an interrupted pass: %s", l)
		}
	}
	// The next start finishes the job.
	e.ak.SetLatency(0)
	e.start("BRIDGE_RESYNC_INTERVAL=1h", "BRIDGE_GATEWAY=false")
	waitFor(t, "the next pass to bring everyone in line", func() bool {
		for _, pk := range pks {
			if !strings.Contains(string(e.ak.UserAttributes(pk)), `"roles"`) {
				return false
			}
		}
		return true
	})
}
