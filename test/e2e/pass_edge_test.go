package e2e

import (
	"bytes"
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
	const n = 80
	ids := make([]string, n)
	pks := make([]int32, n)
	for i := range n {
		ids[i] = strconv.Itoa(320000000000000000 + i)
		pk := e.ak.AddUser(authentikstub.User{Username: "s" + strconv.Itoa(i), IsActive: true,
			Type: "external", Attributes: json.RawMessage(`{"locale":"de"}`)})
		pks[i] = pk
		e.ak.AddConnection("discord", pk, ids[i])
		m := discordstub.ExampleMember()
		m.User.ID, m.User.Username, m.User.Avatar = ids[i], "s"+strconv.Itoa(i), nil
		m.Roles = []string{roleMember}
		mustSetMember(t, e, m)
	}
	e.ak.SetLatency(20 * time.Millisecond)
	e.ak.ResetCounts()
	cmd := exec.Command(binary, "sync", "--all")
	cmd.Env = append(os.Environ()[:0:0], e.vars...)
	var o, er bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &er
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the pass writes, then interrupt it.
	deadline := time.Now().Add(30 * time.Second)
	for e.ak.Counts().Writes < 10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	sent := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	took := time.Since(sent)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	t.Logf("exit %d after %v; %d writes\nstdout:\n%s\nstderr:\n%s", code, took,
		e.ak.Counts().Writes, o.String(), lastLines(er.String(), 15))
	if code == 0 {
		t.Errorf("interrupted pass exited 0")
	}
	if took > 5*time.Second {
		t.Errorf("pass took %v to stop after SIGTERM", took)
	}
	// Per-member "context canceled" errors do not count: they name the syncs in flight,
	// not the members the pass never got to.
	if !strings.Contains(o.String(), "interrupted: ") ||
		!strings.Contains(o.String(), "out-of-date member(s) not reached") ||
		!strings.Contains(er.String(), "full pass interrupted before") {
		t.Errorf("nothing in the output says the pass was cut short before the rest of the " +
			"out-of-date members")
	}

	e.ak.SetLatency(0)
	if out, errOut, code := e.cli("sync", "--all"); code != 0 {
		t.Fatalf("pass after the interrupted one exited %d:\n%s\n%s", code, out, errOut)
	}
	for i := range n {
		attrs := string(e.ak.UserAttributes(pks[i]))
		if !strings.Contains(attrs, `"locale":"de"`) || !strings.Contains(attrs, ids[i]) {
			t.Errorf("user s%d after the next pass: %s", i, attrs)
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
