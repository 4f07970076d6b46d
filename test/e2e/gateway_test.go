package e2e

// Issue 4's live sync seen from outside: the Discord stand-in's gateway sends events to the
// real `bridge serve`, and the tests watch what reaches the Authentik stand-in.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discord-authentik-bridge/bridge/authentik"
	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/reconcile"
	"github.com/discord-authentik-bridge/bridge/reconcile/sqlitestore"
	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

// roleGroups are the managed groups each role of the seeded guild feeds (see seed).
var roleGroups = map[string][]string{
	roleAdmin:   {"makerspace-admins"},
	roleEditor:  {"makerspace-editors"},
	roleMember:  {"makerspace-editors", "makerspace-members"},
	roleRetired: {"retired-role"},
}

// nellyUnmanaged are nelly's groups the bridge leaves alone: no mapping, an invalid one, and
// a superuser group.
var nellyUnmanaged = []string{"authentik Admins", "broken-mapping", "staff"}

// groupsFor is the sorted list of groups a user with the given unmanaged groups and Discord
// roles ends up in.
func groupsFor(unmanaged []string, roles ...string) []string {
	out := slices.Clone(unmanaged)
	for _, r := range roles {
		for _, g := range roleGroups[r] {
			if !slices.Contains(out, g) {
				out = append(out, g)
			}
		}
	}
	slices.Sort(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// nellyWith is the seeded nelly with other roles; nothing but the roles differs from the seed.
func nellyWith(roles ...string) discordstub.Member {
	m := discordstub.ExampleMember()
	m.User.ID, m.User.Username, m.User.GlobalName = nellyID, "nelly", discordstub.Ptr("Nelly N.")
	m.Roles = roles
	return m
}

// patWith is the seeded pat (not yet through membership screening unless pending is false).
func patWith(pending bool, nick string, roles ...string) discordstub.Member {
	m := discordstub.ExampleMember()
	m.User.ID, m.User.Username, m.Pending, m.Roles = pendingID, "pat", pending, roles
	m.Nick = nil
	if nick != "" {
		m.Nick = discordstub.Ptr(nick)
	}
	return m
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// gwConnected waits until the stand-in has a gateway session with the bridge: events
// dispatched before that reach nobody.
func gwConnected(t *testing.T, e *env) {
	t.Helper()
	waitFor(t, "the bridge's gateway session", e.dc.Connected)
}

// syncNelly brings nelly in line through the sync hook, so that later changes show alone.
func syncNelly(t *testing.T, e *env, w world) {
	t.Helper()
	status, body := e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": nellyID, "user_pk": w.nelly})
	if status != http.StatusOK || body["status"] != "changed" {
		t.Fatalf("sync hook for nelly = %d %v, want 200 changed", status, body)
	}
}

// discordAttr decodes the user's attributes.discord, zero when it is missing.
func discordAttr(t *testing.T, e *env, pk int32) reconcile.DiscordAttribute {
	t.Helper()
	var d reconcile.DiscordAttribute
	if raw, ok := attrsOf(t, e.ak.UserAttributes(pk))["discord"]; ok {
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("attributes.discord of user %d: %v: %s", pk, err, raw)
		}
	}
	return d
}

// hasRoles reports whether the user's attributes.discord lists exactly roles, in any order.
func hasRoles(t *testing.T, e *env, pk int32, roles []string) bool {
	t.Helper()
	got := slices.Clone(discordAttr(t, e, pk).Roles)
	want := slices.Clone(roles)
	sort.Strings(got)
	sort.Strings(want)
	return got != nil && slices.Equal(got, want)
}

// settle waits until the bridge has stopped writing to Authentik: the write count stays the
// same for half a second. A state checked after settle is the final one, not a passing one.
func settle(t *testing.T, e *env) {
	t.Helper()
	const quiet = 500 * time.Millisecond
	deadline := time.Now().Add(15 * time.Second)
	last, since := e.ak.Counts().Writes, time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(25 * time.Millisecond)
		if n := e.ak.Counts().Writes; n != last {
			last, since = n, time.Now()
			continue
		}
		if time.Since(since) >= quiet {
			return
		}
	}
	t.Fatalf("the bridge kept writing to Authentik for 15 s")
}

// stays checks for a while that cond keeps holding, for things that must not happen.
func stays(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !cond() {
			t.Fatalf("%s no longer holds", what)
		}
	}
}

// writeRoutes are the Authentik write calls since the last ResetCounts, by route.
func writeRoutes(c authentikstub.Counts) map[string]int {
	out := map[string]int{}
	for route, n := range c.ByRoute {
		method, _, _ := strings.Cut(route, " ")
		switch method {
		case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
			out[route] = n
		}
	}
	return out
}

const (
	routeAddUser    = "POST /api/v3/core/groups/{group_uuid}/add_user/"
	routeRemoveUser = "POST /api/v3/core/groups/{group_uuid}/remove_user/"
	routePatchUser  = "PATCH /api/v3/core/users/{id}/"
	routeMembers    = "GET /guilds/{guild}/members"
)

// logLines counts the lines of the bridge's log that contain every part.
func logLines(e *env, parts ...string) int {
	n := 0
	for line := range strings.Lines(e.logs.String()) {
		if containsAll(line, parts...) {
			n++
		}
	}
	return n
}

// passesFinished counts the full passes the bridge finished for trigger ("" for any).
func passesFinished(e *env, trigger string) int {
	if trigger == "" {
		return logLines(e, `msg="full pass finished"`)
	}
	return logLines(e, `msg="full pass finished"`, "trigger=full_pass:"+trigger+" ")
}

// auditLog opens the bridge's database next to the running bridge (SQLite in WAL mode lets
// both in) to read which trigger made each change.
func auditLog(t *testing.T, e *env) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.Context(), filepath.Join(e.dataDir, "bridge.db"),
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("open the bridge's database: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitForChange waits until the audit log records the group change of user pk and returns
// the trigger of the newest such entry.
func waitForChange(t *testing.T, s *sqlitestore.Store, pk int32, kind reconcile.ChangeKind,
	group string) string {
	t.Helper()
	var trigger string
	waitFor(t, fmt.Sprintf("the audit entry %s %s of user %d", kind, group, pk), func() bool {
		cs, err := s.Changes(t.Context(), reconcile.ChangeFilter{UserPK: pk, Kind: kind})
		if err != nil {
			t.Fatalf("read audit log: %v", err)
		}
		for _, c := range cs {
			if c.Target == group {
				trigger = c.Trigger
				return true
			}
		}
		return false
	})
	return trigger
}

// snapshot is what a test expects to stay untouched about a user.
type snapshot struct {
	Groups     []string
	Attributes string
}

func snap(e *env, pks ...int32) map[int32]snapshot {
	out := map[int32]snapshot{}
	for _, pk := range pks {
		out[pk] = snapshot{e.ak.UserGroupNames(pk), string(e.ak.UserAttributes(pk))}
	}
	return out
}

// foreignAttrs are the user's attributes the bridge does not own.
func foreignAttrs(t *testing.T, e *env, pk int32) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range attrsOf(t, e.ak.UserAttributes(pk)) {
		if k != "discord" && k != "avatar" {
			out[k] = string(v)
		}
	}
	return out
}

func TestGateway_RoleAddedThenRemoved(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.start()
	gwConnected(t, e)
	syncNelly(t, e, w)
	foreign := foreignAttrs(t, e, w.nelly)
	others := snap(e, w.pending, w.outsider)
	audit := auditLog(t, e)

	for _, step := range []struct {
		name   string
		roles  []string
		kind   reconcile.ChangeKind
		writes map[string]int
	}{
		{"role added", []string{roleMember, roleAdmin, roleRetired}, reconcile.KindGroupAdd,
			map[string]int{routeAddUser: 1, routePatchUser: 1}},
		{"role removed", []string{roleMember, roleAdmin}, reconcile.KindGroupRemove,
			map[string]int{routeRemoveUser: 1, routePatchUser: 1}},
	} {
		ok := t.Run(step.name, func(t *testing.T) {
			e.ak.ResetCounts()
			must(t, e.dc.DispatchMemberUpdate(nellyWith(step.roles...)))
			want := groupsFor(nellyUnmanaged, step.roles...)
			waitFor(t, "nelly's groups and roles to follow the event", func() bool {
				return cmp.Equal(want, e.ak.UserGroupNames(w.nelly)) &&
					hasRoles(t, e, w.nelly, step.roles)
			})
			settle(t, e)

			if diff := cmp.Diff(want, e.ak.UserGroupNames(w.nelly)); diff != "" {
				t.Errorf("nelly's groups (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(step.writes, writeRoutes(e.ak.Counts())); diff != "" {
				t.Errorf("Authentik writes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(foreign, foreignAttrs(t, e, w.nelly)); diff != "" {
				t.Errorf("attributes the bridge does not own changed (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(others, snap(e, w.pending, w.outsider)); diff != "" {
				t.Errorf("other users changed (-before +after):\n%s", diff)
			}
			got := waitForChange(t, audit, w.nelly, step.kind, "retired-role")
			if got != "gateway:member_update" {
				t.Errorf("the change was made by trigger %q, want gateway:member_update", got)
			}
		})
		if !ok {
			return
		}
	}
}

func TestGateway_QuickUpdatesEndInLastState(t *testing.T) {
	// Nelly starts with the admin role; both lists end elsewhere, so doing nothing fails.
	alternating := make([][]string, 20)
	for i := range alternating {
		alternating[i] = []string{roleMember, roleAdmin}
		if i%2 == 1 {
			alternating[i] = []string{roleMember, roleRetired}
		}
	}
	for _, tc := range []struct {
		name    string
		updates [][]string
	}{
		{"two back to back", [][]string{{roleMember, roleAdmin, roleRetired}, {roleMember}}},
		{"twenty alternating", alternating},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			w := seed(t, e)
			e.start()
			gwConnected(t, e)
			syncNelly(t, e, w)
			e.ak.ResetCounts()

			for _, roles := range tc.updates {
				must(t, e.dc.DispatchMemberUpdate(nellyWith(roles...)))
			}
			last := tc.updates[len(tc.updates)-1]
			want := groupsFor(nellyUnmanaged, last...)
			waitFor(t, "nelly in the state of the last update", func() bool {
				return cmp.Equal(want, e.ak.UserGroupNames(w.nelly)) &&
					hasRoles(t, e, w.nelly, last)
			})
			settle(t, e)
			if diff := cmp.Diff(want, e.ak.UserGroupNames(w.nelly)); diff != "" {
				t.Errorf("after the writes stopped, nelly's groups (-want +got):\n%s", diff)
			}
			if !hasRoles(t, e, w.nelly, last) {
				t.Errorf("after the writes stopped, attributes.discord.roles = %v, want %v",
					discordAttr(t, e, w.nelly).Roles, last)
			}
			writes := e.ak.Counts().Writes
			if writes == 0 {
				t.Errorf("no Authentik write: the last update must differ from the start")
			}
			t.Logf("%d updates made %d Authentik writes", len(tc.updates), writes)
		})
	}
}

// TestGateway_LostEventsRepairedByPassAfterReady loses an event with the session it was
// meant for: the stand-in holds it, then ends the session with a non-resumable
// INVALID_SESSION, and a new session never gets the old one's events. Only the pass that the
// new session's READY asks for can bring the change in.
func TestGateway_LostEventsRepairedByPassAfterReady(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	withPasses(e, "1h")
	e.start("BRIDGE_MAX_REMOVAL_SHARE=1")
	wantNellyConverged(t, e, w)
	gwConnected(t, e)
	waitFor(t, "the pass after the first READY", func() bool {
		return passesFinished(e, "gateway_ready") == 1
	})
	identifies, resumes := e.dc.Identifies(), e.dc.Resumes()

	e.dc.PauseDispatch(true)
	must(t, e.dc.DispatchMemberUpdate(nellyWith(roleMember)))
	e.dc.SendInvalidSession(false)
	e.dc.PauseDispatch(false)

	waitFor(t, "a new session", func() bool { return e.dc.Identifies() > identifies })
	waitFor(t, "the pass after the new READY", func() bool {
		return passesFinished(e, "gateway_ready") == 2
	})
	want := groupsFor(nellyUnmanaged, roleMember)
	waitFor(t, "nelly to lose the admin group", func() bool {
		return cmp.Equal(want, e.ak.UserGroupNames(w.nelly))
	})
	got := waitForChange(t, auditLog(t, e), w.nelly, reconcile.KindGroupRemove,
		"makerspace-admins")
	if got != "full_pass:gateway_ready" {
		t.Errorf("the lost change was made by trigger %q, want full_pass:gateway_ready "+
			"(if it is gateway:member_update, the event was not lost and the test proves nothing)",
			got)
	}
	if n := e.dc.Resumes(); n != resumes {
		t.Errorf("the stand-in saw %d resumes after INVALID_SESSION(false), want %d", n, resumes)
	}
}

// TestGateway_ResumeReplaysWithoutPass drops the connection: the session stays resumable, the
// event sent meanwhile is replayed on RESUME, and no full pass runs (only a new session's
// READY asks for one).
func TestGateway_ResumeReplaysWithoutPass(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	withPasses(e, "1h")
	e.start("BRIDGE_MAX_REMOVAL_SHARE=1")
	wantNellyConverged(t, e, w)
	gwConnected(t, e)
	waitFor(t, "the pass after the first READY", func() bool {
		return passesFinished(e, "gateway_ready") == 1
	})
	identifies, passes := e.dc.Identifies(), passesFinished(e, "")
	e.dc.ResetCounts()

	e.dc.DropConnection()
	must(t, e.dc.DispatchMemberUpdate(nellyWith(roleMember)))
	waitFor(t, "the bridge to resume", func() bool { return e.dc.Resumes() == 1 })
	want := groupsFor(nellyUnmanaged, roleMember)
	waitFor(t, "nelly to lose the admin group", func() bool {
		return cmp.Equal(want, e.ak.UserGroupNames(w.nelly))
	})
	got := waitForChange(t, auditLog(t, e), w.nelly, reconcile.KindGroupRemove,
		"makerspace-admins")
	if got != "gateway:member_update" {
		t.Errorf("the replayed change was made by trigger %q, want gateway:member_update", got)
	}
	settle(t, e)

	if n := e.dc.Identifies(); n != identifies {
		t.Errorf("the bridge identified %d times after the drop, want a resume only",
			n-identifies)
	}
	if n := passesFinished(e, ""); n != passes {
		t.Errorf("%d full passes ran after a resume, want none", n-passes)
	}
	if n := e.dc.Counts().ByRoute[routeMembers]; n != 0 {
		t.Errorf("the member list was read %d times after a resume, want 0", n)
	}
}

// startUnready runs `bridge serve` like env.start but waits only for /readyz to answer at
// all, for tests of a bridge that is up but not ready.
func startUnready(e *env, extra ...string) {
	e.t.Helper()
	e.launch(extra...)
	waitFor(e.t, "the bridge to listen", func() bool {
		status, _ := readyz(e)
		return status != 0
	})
}

// readyz returns /readyz's status and reasons; status 0 when it cannot be reached.
func readyz(e *env) (int, []string) {
	resp, err := http.Get(e.url + "/readyz")
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var body struct{ Reasons []string }
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &body); err != nil {
		e.t.Errorf("/readyz answered %d with %q, not JSON", resp.StatusCode, raw)
	}
	return resp.StatusCode, body.Reasons
}

func TestGateway_IntentRefused(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.dc.RefuseIntents(true)
	startUnready(e)

	const intent = "Server Members Intent"
	var reasons []string
	waitFor(t, "/readyz to name the refused intent", func() bool {
		var status int
		status, reasons = readyz(e)
		// Until the mapping is loaded that is a second reason; wait for it to go.
		return status == http.StatusServiceUnavailable && len(reasons) == 1 &&
			strings.Contains(reasons[0], intent)
	})
	if !containsAll(reasons[0], "4014", "developer portal") {
		t.Errorf("/readyz reason %q does not say what happened and where to fix it", reasons[0])
	}

	// One attempt, one report: no reconnect loop. discordgo's own loop would identify again
	// within a second or two, the bridge's back-off at the latest after one.
	if n := e.dc.Identifies(); n != 1 {
		t.Errorf("the bridge identified %d times, want 1", n)
	}
	reports := logLines(e, intent)
	stays(t, "one IDENTIFY and no new report", 2*time.Second, func() bool {
		return e.dc.Identifies() == 1 && logLines(e, intent) == reports
	})
	if n := logLines(e, "close_code=4014", intent, "developer portal"); n != 1 {
		t.Errorf("%d log lines report close code 4014 naming the portal switch, want 1", n)
	}
	if n := logLines(e, "discord gateway disconnected") + logLines(e, "connect failed"); n != 0 {
		t.Errorf("%d log lines about reconnecting after 4014, want none", n)
	}
	if status, _ := readyz(e); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d after the wait, want it to keep answering 503", status)
	}

	// Hooks do not depend on the gateway.
	_, body := e.hook("/v1/authentik/gate", map[string]string{"discord_id": nellyID})
	if body["allowed"] != true {
		t.Errorf("gate for a member with the gateway down = %v", body)
	}
	syncNelly(t, e, w)
	if diff := cmp.Diff(groupsFor(nellyUnmanaged, roleMember, roleAdmin),
		e.ak.UserGroupNames(w.nelly)); diff != "" {
		t.Errorf("nelly's groups after the sync hook (-want +got):\n%s", diff)
	}
}

func TestGateway_MemberRemoved(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.start()
	gwConnected(t, e)
	syncNelly(t, e, w)
	foreign := foreignAttrs(t, e, w.nelly)
	others := snap(e, w.pending, w.outsider)

	must(t, e.dc.DispatchMemberRemove(nellyID))
	waitFor(t, "nelly to lose every managed group", func() bool {
		return cmp.Equal(nellyUnmanaged, e.ak.UserGroupNames(w.nelly))
	})
	got := waitForChange(t, auditLog(t, e), w.nelly, reconcile.KindGroupRemove,
		"makerspace-members")
	if got != "gateway:member_remove" {
		t.Errorf("the removal was made by trigger %q, want gateway:member_remove", got)
	}
	settle(t, e)
	if diff := cmp.Diff(nellyUnmanaged, e.ak.UserGroupNames(w.nelly)); diff != "" {
		t.Errorf("nelly's groups (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(foreign, foreignAttrs(t, e, w.nelly)); diff != "" {
		t.Errorf("attributes the bridge does not own changed (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(others, snap(e, w.pending, w.outsider)); diff != "" {
		t.Errorf("other users changed (-before +after):\n%s", diff)
	}
}

// TestGateway_PendingMemberJoins pins what the code does with a member who has not passed
// membership screening: the sync gives them the groups of their roles at once, whatever
// BRIDGE_GATE_ALLOW_PENDING says; that setting only decides whether the gate lets them log in.
func TestGateway_PendingMemberJoins(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("BRIDGE_GATE_ALLOW_PENDING=%t", allow), func(t *testing.T) {
			e := newEnv(t)
			w := seed(t, e)
			e.dc.RemoveMember(pendingID) // pat joins during the test
			e.start(fmt.Sprintf("BRIDGE_GATE_ALLOW_PENDING=%t", allow))
			gwConnected(t, e)
			want := groupsFor(nil, roleMember)

			must(t, e.dc.DispatchMemberAdd(patWith(true, "", roleMember)))
			waitFor(t, "pat's groups from the pending join", func() bool {
				return cmp.Equal(want, e.ak.UserGroupNames(w.pending)) &&
					hasRoles(t, e, w.pending, []string{roleMember})
			})
			got := waitForChange(t, auditLog(t, e), w.pending, reconcile.KindGroupAdd,
				"makerspace-members")
			if got != "gateway:member_add" {
				t.Errorf("the join was applied by trigger %q, want gateway:member_add", got)
			}
			_, gate := e.hook("/v1/authentik/gate", map[string]string{"discord_id": pendingID})
			if gate["allowed"] != allow || gate["reason"] != "pending" {
				t.Errorf("gate for pending pat = %v, want allowed %t, reason pending", gate, allow)
			}

			// Screening passed; the nick shows that the update was applied.
			must(t, e.dc.DispatchMemberUpdate(patWith(false, "Pat", roleMember)))
			waitFor(t, "the update after screening", func() bool {
				nick := discordAttr(t, e, w.pending).Nick
				return nick != nil && *nick == "Pat"
			})
			settle(t, e)
			if diff := cmp.Diff(want, e.ak.UserGroupNames(w.pending)); diff != "" {
				t.Errorf("pat's groups after screening (-want +got):\n%s", diff)
			}
			_, gate = e.hook("/v1/authentik/gate", map[string]string{"discord_id": pendingID})
			if gate["allowed"] != true || gate["reason"] != "member" {
				t.Errorf("gate for pat after screening = %v, want allowed, member", gate)
			}
		})
	}
}

// TestGateway_RoleDeleted: Discord sends no member updates when a role is deleted, so the
// bridge asks for a full pass, which empties the group fed only by that role. With passes
// off (BRIDGE_RESYNC_INTERVAL=0) no pass runs and the members keep the group until a sync of
// their own.
func TestGateway_RoleDeleted(t *testing.T) {
	t.Run("passes on", func(t *testing.T) {
		e := newEnv(t)
		w := seed(t, e)
		withPasses(e, "1h")
		e.start("BRIDGE_MAX_REMOVAL_SHARE=1")
		wantNellyConverged(t, e, w)
		gwConnected(t, e)
		waitFor(t, "the pass after the first READY", func() bool {
			return passesFinished(e, "gateway_ready") == 1
		})

		must(t, e.dc.DispatchRoleDelete(roleAdmin))
		waitFor(t, "a pass for the deleted role", func() bool {
			return passesFinished(e, "role_deleted") == 1
		})
		waitFor(t, "the admin group to lose its member", func() bool {
			return len(e.ak.GroupMembers(w.groups["makerspace-admins"])) == 0
		})
		got := waitForChange(t, auditLog(t, e), w.nelly, reconcile.KindGroupRemove,
			"makerspace-admins")
		if got != "full_pass:role_deleted" {
			t.Errorf("the removal was made by trigger %q, want full_pass:role_deleted", got)
		}
		settle(t, e)
		if diff := cmp.Diff(groupsFor(nellyUnmanaged, roleMember),
			e.ak.UserGroupNames(w.nelly)); diff != "" {
			t.Errorf("nelly's groups (-want +got):\n%s", diff)
		}
		if logLines(e, "names no role of the guild", "role_id="+roleAdmin) == 0 {
			t.Error("the log does not report the mapped role that no longer exists")
		}
	})

	t.Run("passes off", func(t *testing.T) {
		e := newEnv(t)
		w := seed(t, e)
		e.start()
		gwConnected(t, e)
		syncNelly(t, e, w)
		e.dc.ResetCounts()

		must(t, e.dc.DispatchRoleDelete(roleAdmin))
		// Events are handled in order: once pat's update is applied, the deletion has been
		// handled too.
		must(t, e.dc.DispatchMemberUpdate(patWith(true, "marker", roleMember)))
		waitFor(t, "the event after the deletion", func() bool {
			nick := discordAttr(t, e, w.pending).Nick
			return nick != nil && *nick == "marker"
		})
		stays(t, "no full pass", time.Second, func() bool {
			return passesFinished(e, "") == 0 && e.dc.Counts().ByRoute[routeMembers] == 0
		})
		if !slices.Contains(e.ak.UserGroupNames(w.nelly), "makerspace-admins") {
			t.Error("nelly lost the admin group without a pass or a sync of her own")
		}
	})
}

// writeStamp is when an Authentik write arrived at the proxy and when its answer left.
type writeStamp struct {
	route         string
	arrived, done time.Time
}

// writeClock is a reverse proxy in front of the Authentik stand-in that notes the time of
// every group membership write and user PATCH, so that latency is measured at the wire
// without polling.
func writeClock(tb testing.TB, target string, stamps chan<- writeStamp) string {
	tb.Helper()
	u, err := url.Parse(target)
	if err != nil {
		tb.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived := time.Now()
		rp.ServeHTTP(w, r)
		route := ""
		switch p := r.URL.Path; {
		case r.Method == http.MethodPost && strings.HasSuffix(p, "/add_user/"):
			route = routeAddUser
		case r.Method == http.MethodPost && strings.HasSuffix(p, "/remove_user/"):
			route = routeRemoveUser
		case r.Method == http.MethodPatch && strings.HasPrefix(p, "/api/v3/core/users/"):
			route = routePatchUser
		default:
			return
		}
		select {
		case stamps <- writeStamp{route: route, arrived: arrived, done: time.Now()}:
		default:
			tb.Errorf("write stamp dropped: %s", route)
		}
	}))
	tb.Cleanup(srv.Close)
	return srv.URL
}

// BenchmarkGatewayEventToWrite measures one role change from the gateway event to the
// Authentik write: the stand-in dispatches GUILD_MEMBER_UPDATE, and a proxy in front of the
// Authentik stand-in notes when the add_user or remove_user call arrives. The parts are wired
// as `bridge serve` wires them (gateway → controller → queue of 4 workers → reconciler), in
// one process, with the stand-ins answering without delay and without schema validation. Run
// with -benchtime=200x for 200 changes; each alternately adds and removes one role.
func BenchmarkGatewayEventToWrite(b *testing.B) {
	ak, err := authentikstub.New(authentikstub.Options{Token: akToken, NoValidate: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ak.Close() })
	dc, err := discordstub.New(discordstub.Options{GuildID: guildID, Token: botToken})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dc.Close() })

	for name, role := range map[string]string{"members": roleMember, "retired": roleRetired} {
		ak.AddGroup(authentikstub.Group{Name: name,
			Attributes: json.RawMessage(`{"discord_role_id":"` + role + `"}`)})
	}
	pk := ak.AddUser(authentikstub.User{Username: "nelly", IsActive: true,
		Attributes: json.RawMessage(`{"employee_number":1234567890123456789}`)})
	ak.AddConnection("discord", pk, nellyID)
	stamps := make(chan writeStamp, 64)
	akURL := writeClock(b, ak.URL(), stamps)

	log := slog.New(slog.DiscardHandler)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	dcl, err := discord.NewClient(discord.Options{Token: botToken, APIURL: dc.APIURL(),
		HTTPClient: hc})
	if err != nil {
		b.Fatal(err)
	}
	akc, err := authentik.New(authentik.Options{URL: akURL, Token: akToken,
		SourceSlug: "discord", HTTPClient: hc})
	if err != nil {
		b.Fatal(err)
	}
	store, err := sqlitestore.Open(context.Background(), filepath.Join(b.TempDir(), "b.db"), log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	rec := reconcile.New(dcl, akc, store, log, reconcile.Options{GuildID: guildID,
		MappingRefresh: 30 * time.Second})
	ctrl := reconcile.NewController(rec, reconcile.NewQueue(rec, 4, log), 0, log)
	gw, err := discord.NewGateway(discord.GatewayOptions{Token: botToken, GuildID: guildID,
		APIURL: dc.APIURL(), Logger: log, Handle: ctrl.HandleEvent})
	if err != nil {
		b.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { ctrl.Run(ctx) })
	wg.Go(func() {
		if err := gw.Run(ctx); err != nil {
			b.Errorf("gateway: %v", err)
		}
	})
	// Cleanups run last in, first out: stop the bridge before the stand-ins close.
	b.Cleanup(func() { cancel(); wg.Wait() })
	for deadline := time.Now().Add(10 * time.Second); !dc.Connected(); {
		if time.Now().After(deadline) {
			b.Fatal("no gateway session within 10 s")
		}
		time.Sleep(time.Millisecond)
	}

	// change dispatches one update and returns the stamp of the group write it causes, after
	// the sync's attribute PATCH has been answered too, so that syncs do not overlap.
	change := func(roles ...string) (start time.Time, group writeStamp) {
		for len(stamps) > 0 {
			<-stamps
		}
		m := discordstub.ExampleMember()
		m.User.ID, m.Roles = nellyID, roles
		start = time.Now()
		if err := dc.DispatchMemberUpdate(m); err != nil {
			b.Fatal(err)
		}
		timeout := time.After(10 * time.Second)
		for patched := false; group.route == "" || !patched; {
			select {
			case s := <-stamps:
				if s.route == routePatchUser {
					patched = true
				} else if group.route == "" {
					group = s
				}
			case <-timeout:
				b.Fatalf("no group write and PATCH within 10 s of the event (roles %v)", roles)
			}
		}
		return start, group
	}

	// The first change loads the mapping and writes the whole attribute; not measured.
	change(roleMember)
	var toWrite, toAnswer []time.Duration
	for i := 0; b.Loop(); i++ {
		roles, want := []string{roleMember, roleRetired}, routeAddUser
		if i%2 == 1 {
			roles, want = []string{roleMember}, routeRemoveUser
		}
		start, s := change(roles...)
		if s.route != want {
			b.Fatalf("change %d wrote %s, want %s", i, s.route, want)
		}
		toWrite = append(toWrite, s.arrived.Sub(start))
		toAnswer = append(toAnswer, s.done.Sub(start))
	}

	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"max", 1}} {
		b.ReportMetric(ms(percentile(toWrite, q.p)), q.name+"-ms")
	}
	b.ReportMetric(ms(percentile(toAnswer, 0.99)), "p99-answered-ms")
	b.Logf("%d changes, event → write arrives: p50 %v p90 %v p99 %v max %v; → answered: p99 %v",
		len(toWrite), percentile(toWrite, 0.5), percentile(toWrite, 0.9),
		percentile(toWrite, 0.99), percentile(toWrite, 1), percentile(toAnswer, 0.99))
}

// percentile is the nearest-rank percentile p (0 < p ≤ 1) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
