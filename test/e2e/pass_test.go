package e2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

// withPasses turns full passes back on for a test (the harness turns them off).
func withPasses(e *env, interval string) {
	for i, v := range e.vars {
		if strings.HasPrefix(v, "BRIDGE_RESYNC_INTERVAL=") {
			e.vars[i] = "BRIDGE_RESYNC_INTERVAL=" + interval
		}
	}
}

func wantNellyConverged(t *testing.T, e *env, w world) {
	t.Helper()
	want := []string{"authentik Admins", "broken-mapping", "makerspace-admins",
		"makerspace-editors", "makerspace-members", "staff"}
	waitFor(t, "nelly's groups to converge", func() bool {
		return cmp.Equal(want, e.ak.UserGroupNames(w.nelly))
	})
}

func TestFullPass_AtStartConverges(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	withPasses(e, "1h")
	e.start("BRIDGE_MAX_REMOVAL_SHARE=1")

	wantNellyConverged(t, e, w)
	// The outsider is linked but not in the guild: managed groups go, the rest stays.
	waitFor(t, "the outsider to lose managed groups", func() bool {
		return cmp.Equal([]string{"staff"}, e.ak.UserGroupNames(w.outsider))
	})
	if got := string(e.ak.UserAttributes(w.outsider)); got != `{"keep":"me"}` {
		t.Errorf("outsider's attributes changed: %s", got)
	}
}

func TestSyncAll_DryRunThenApplyThenIdle(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)

	out, errOut, code := e.cli("sync", "--all", "--dry-run")
	if code != 0 {
		t.Fatalf("sync --all --dry-run exited %d:\n%s\n%s", code, out, errOut)
	}
	if !containsAll(out, "+ group makerspace-admins", "- group makerspace-members",
		"dry run: nothing was changed", "linked users 3") {
		t.Errorf("dry-run output:\n%s", out)
	}
	if c := e.ak.Counts(); c.Writes != 0 {
		t.Fatalf("dry run wrote %d times", c.Writes)
	}

	// Two of the three linked users lose a group, which trips the default 20 % guard in a
	// world this small; --force is what an admin would run after reading the dry run.
	out, errOut, code = e.cli("sync", "--all", "--force")
	if code != 0 {
		t.Fatalf("sync --all exited %d:\n%s\n%s", code, out, errOut)
	}
	wantNellyConverged(t, e, w)

	// A second pass finds nothing to do and writes nothing.
	e.ak.ResetCounts()
	out, _, code = e.cli("sync", "--all")
	if code != 0 || !strings.Contains(out, "out of date 0") {
		t.Errorf("second pass: exit %d\n%s", code, out)
	}
	if c := e.ak.Counts(); c.Writes != 0 {
		t.Errorf("second pass wrote %d times: %v", c.Writes, c.ByRoute)
	}
}

func TestFullPass_MassRemovalGuard(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.vars = append(e.vars, "BRIDGE_MAX_REMOVAL_SHARE=0.5")
	out, _, code := e.cli("sync", "--all", "--force")
	if code != 0 {
		t.Fatalf("first pass exited %d\n%s", code, out)
	}

	// Both members lose their roles at once: two of three linked users would be stripped,
	// more than the 50 % allowed, so the pass must stop and apply nothing.
	for _, id := range []string{nellyID, pendingID} {
		m := discordstub.ExampleMember()
		m.User.ID, m.Roles = id, []string{}
		mustSetMember(t, e, m)
	}
	e.ak.ResetCounts()
	out, _, code = e.cli("sync", "--all")
	if code == 0 || !strings.Contains(out, "stopped:") || !strings.Contains(out, "BRIDGE_MAX_REMOVAL_SHARE") {
		t.Fatalf("guard did not trip: exit %d\n%s", code, out)
	}
	if c := e.ak.Counts(); c.Writes != 0 {
		t.Fatalf("the tripped guard still wrote %d times", c.Writes)
	}
	if !contains(e.ak.UserGroupNames(w.nelly), "makerspace-admins") {
		t.Fatal("a group was removed although the guard tripped")
	}

	out, _, code = e.cli("sync", "--all", "--force")
	if code != 0 || contains(e.ak.UserGroupNames(w.nelly), "makerspace-admins") {
		t.Errorf("--force did not apply: exit %d\n%s", code, out)
	}
}

func TestFullPass_EmptyMemberListIsNotEveryoneLeaving(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	if out, _, code := e.cli("sync", "--all", "--force"); code != 0 {
		t.Fatalf("first pass: %s", out)
	}
	for _, id := range []string{nellyID, pendingID} {
		e.dc.RemoveMember(id)
	}
	e.ak.ResetCounts()
	_, errOut, code := e.cli("sync", "--all", "--force")
	if code == 0 || !strings.Contains(errOut, "no members at all") {
		t.Errorf("pass over an empty member list: exit %d\n%s", code, errOut)
	}
	if c := e.ak.Counts(); c.Writes != 0 || !contains(e.ak.UserGroupNames(w.nelly), "makerspace-admins") {
		t.Errorf("an empty member list caused %d writes", c.Writes)
	}
}

func TestFullPass_DeletedRoleIsReportedAndItsGroupEmptied(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.vars = append(e.vars, "BRIDGE_MAX_REMOVAL_SHARE=1")
	if out, _, code := e.cli("sync", "--all"); code != 0 {
		t.Fatalf("first pass: %s", out)
	}
	// The admin role is deleted in Discord: the member no longer has it, and the role list
	// no longer names it.
	m := discordstub.ExampleMember()
	m.User.ID, m.User.Username, m.User.GlobalName = nellyID, "nelly", discordstub.Ptr("Nelly N.")
	m.Roles = []string{roleMember}
	mustSetMember(t, e, m)
	var roles []discordstub.Role
	for _, id := range []string{roleEditor, roleRetired, roleMember} {
		r := discordstub.ExampleRole()
		r.ID = id
		roles = append(roles, r)
	}
	e.dc.SetRoles(roles...)

	out, _, code := e.cli("sync", "--all")
	if code != 0 {
		t.Fatalf("pass exited %d\n%s", code, out)
	}
	if !strings.Contains(out, "discord_role_id "+roleAdmin+" names no role of the guild") {
		t.Errorf("unknown role not reported:\n%s", out)
	}
	if contains(e.ak.UserGroupNames(w.nelly), "makerspace-admins") {
		t.Error("the group fed only by the deleted role kept its member")
	}
}

// TestFullPass_KilledMidwayConverges kills the bridge with SIGKILL while a pass is applying
// changes, starts it again, and checks that everything converges with nothing else touched.
func TestFullPass_KilledMidwayConverges(t *testing.T) {
	e := newEnv(t)
	withPasses(e, "1h")
	group := e.ak.AddGroup(authentikstub.Group{Name: "members",
		Attributes: []byte(`{"discord_role_id":"` + roleMember + `"}`)})
	staff := e.ak.AddGroup(authentikstub.Group{Name: "staff", Attributes: []byte(`{}`)})
	var pks []int32
	for i := range 60 {
		id := "9" + strings.Repeat("0", 15) + string(rune('0'+i/10)) + string(rune('0'+i%10))
		m := discordstub.ExampleMember()
		m.User.ID, m.User.Username, m.Roles = id, "m"+id[len(id)-2:], []string{roleMember}
		mustSetMember(t, e, m)
		pk := e.ak.AddUser(authentikstub.User{Username: "u" + id[len(id)-2:], IsActive: true,
			Attributes: []byte(`{"n":1234567890123456789}`)})
		e.ak.AddMember(staff, pk)
		e.ak.AddConnection("discord", pk, id)
		pks = append(pks, pk)
	}
	// Slow Authentik's writes down so the kill lands mid-pass.
	e.ak.SetLatency(20 * time.Millisecond)
	e.start()
	waitFor(t, "the pass to have applied some changes", func() bool {
		return len(e.ak.GroupMembers(group)) >= 5
	})
	if err := e.proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e.proc.Wait()
	e.proc = nil
	done := len(e.ak.GroupMembers(group))
	if done == len(pks) {
		t.Fatalf("the pass finished before the kill; the test proves nothing")
	}
	e.ak.SetLatency(0)

	e.start()
	waitFor(t, "every member in the managed group after restart", func() bool {
		return len(e.ak.GroupMembers(group)) == len(pks)
	})
	for _, pk := range pks {
		attrs := attrsOf(t, e.ak.UserAttributes(pk))
		if string(attrs["n"]) != "1234567890123456789" {
			t.Fatalf("user %d: unrelated attribute changed: %s", pk, attrs["n"])
		}
		if !contains(e.ak.UserGroupNames(pk), "staff") {
			t.Fatalf("user %d lost an unmanaged group", pk)
		}
	}
	t.Logf("killed after %d of %d memberships; converged after restart", done, len(pks))
}

// TestFullPass_FlakyAuthentikConverges: a third of Authentik's answers are 500 for a while;
// the queue retries with back-off and everything converges once it recovers.
func TestFullPass_FlakyAuthentikConverges(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	// Passes every 2 s, so a failed pass is retried soon rather than after half a minute.
	withPasses(e, "2s")
	e.ak.SetFailureRate(1.0 / 3)
	e.start("BRIDGE_MAX_REMOVAL_SHARE=1")
	// Let the pass and the queue's retries run into failures for a while.
	waitFor(t, "Authentik to have answered 30 requests", func() bool {
		return e.ak.Counts().Reads+e.ak.Counts().Writes >= 30
	})
	e.ak.SetFailureRate(0)
	wantNellyConverged(t, e, w)
	waitFor(t, "the outsider to lose managed groups", func() bool {
		return cmp.Equal([]string{"staff"}, e.ak.UserGroupNames(w.outsider))
	})
	if got := string(e.ak.UserAttributes(w.nelly)); !strings.Contains(got, `"employee_number":1234567890123456789`) {
		t.Errorf("unrelated attributes damaged: %s", got)
	}
}

// A pass reads the users it is about to change in batches of eight, just before writing
// them, and never one by one; when Authentik drops the attributes filter and lists everyone,
// the pass notices, says so, and reads the rest one by one.
func TestSyncAll_ReadsChangedUsersInBatches(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	const n, changed = 40, 20
	ids := make([]string, n)
	pks := make([]int32, n)
	for i := range n {
		ids[i] = strconv.Itoa(300000000000000000 + i)
		pks[i] = e.ak.AddUser(authentikstub.User{Username: "m" + strconv.Itoa(i), IsActive: true,
			Type: "external", Attributes: json.RawMessage(`{"locale":"de"}`)})
		e.ak.AddConnection("discord", pks[i], ids[i])
	}
	const one, list = "GET /api/v3/core/users/{id}/", "GET /api/v3/core/users/"
	setRoles := func(roles ...string) {
		for i := range n {
			m := discordstub.ExampleMember()
			m.User.ID, m.User.Username, m.User.Avatar = ids[i], "m"+strconv.Itoa(i), nil
			m.Roles = []string{roleMember}
			if i < changed {
				m.Roles = roles
			}
			mustSetMember(t, e, m)
		}
	}
	// Half the linked users lose a group in the second pass below.
	e.vars = append(e.vars, "BRIDGE_MAX_REMOVAL_SHARE=1")
	setRoles(roleMember)
	if out, errOut, code := e.cli("sync", "--all"); code != 0 {
		t.Fatalf("first pass exited %d:\n%s\n%s", code, out, errOut)
	}

	pass := func() (out, errOut string, c authentikstub.Counts) {
		t.Helper()
		e.ak.ResetCounts()
		out, errOut, code := e.cli("sync", "--all")
		if code != 0 || !strings.Contains(out, "out of date "+strconv.Itoa(changed)) {
			t.Fatalf("pass exited %d, want %d users out of date:\n%s\n%s", code, changed, out,
				errOut)
		}
		return out, errOut, e.ak.Counts()
	}
	setRoles(roleMember, roleAdmin)
	e.ak.ResetCounts()
	out, errOut, code := e.cli("sync", "--all", "--dry-run")
	if code != 0 || strings.Count(out, "+ group makerspace-admins") != changed {
		t.Fatalf("dry run exited %d, want %d additions:\n%s\n%s", code, changed, out, errOut)
	}
	// The one user read by itself is the outsider's: a dry run opens no database, so it
	// cannot know that the outsider was handled already, and the filter cannot find a user
	// the bridge never wrote attributes.discord for.
	if c := e.ak.Counts(); c.ByRoute[one] != 1 || c.ByRoute[list] != (changed+7)/8 {
		t.Errorf("dry run: users read one by one %d times and in %d lists; want 1 and %d",
			c.ByRoute[one], c.ByRoute[list], (changed+7)/8)
	}
	_, _, c := pass()
	if c.ByRoute[one] != 0 || c.ByRoute[list] != (changed+7)/8 {
		t.Errorf("users read one by one %d times and in %d lists; want 0 and %d",
			c.ByRoute[one], c.ByRoute[list], (changed+7)/8)
	}
	// One group added and attributes.discord written per changed user, nothing else.
	if c.Writes != 2*changed {
		t.Errorf("%d writes, want %d: %v", c.Writes, 2*changed, c.ByRoute)
	}

	e.ak.SetIgnoreAttributeFilter(true)
	setRoles(roleMember)
	_, errOut, c = pass()
	if c.ByRoute[list] != 1 || c.ByRoute[one] != changed {
		t.Errorf("with the filter ignored: %d lists and %d reads one by one; want 1 and %d",
			c.ByRoute[list], c.ByRoute[one], changed)
	}
	if !strings.Contains(errOut, "ignored the attributes filter") {
		t.Errorf("no warning that Authentik ignored the filter:\n%s", errOut)
	}
	for i, pk := range pks {
		if !strings.Contains(string(e.ak.UserAttributes(pk)), `"locale":"de"`) {
			t.Errorf("user %s lost an attribute it does not own: %s", ids[i],
				e.ak.UserAttributes(pk))
		}
	}
}
