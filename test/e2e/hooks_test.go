package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
	"github.com/discord-authentik-bridge/bridge/test/discordstub"
)

// Role IDs of the seeded guild. The 19-digit ones do not survive a float64.
const (
	roleAdmin   = "1187654321098765431"
	roleEditor  = "1187654321098765432"
	roleRetired = "1187654321098765433"
	roleMember  = "41771983423143936" // the role of Discord's documented example

	nellyID    = "80351110224678912" // a member with roles
	pendingID  = "80351110224678913" // has not passed membership screening
	strangerID = "80351110224678999" // not in the guild
)

// nellyAttributes are attributes the bridge does not own: a 19-digit number, nested objects,
// characters encoding/json likes to escape, and keys Authentik maintains itself. They must come
// back byte for byte after every write.
var nellyAttributes = `{"employee_number":1234567890123456789,` +
	`"prefs":{"theme":"dark","ratio":2.50,"nested":{"list":[1,{"b":null},"<a&b>"]}},` +
	`"goauthentik.io/user/sources":["Discord"],"goauthentik.io/user/override-ips":true}`

// world is the seeded guild and Authentik instance.
type world struct {
	nelly, pending, outsider int32
	groups                   map[string]string // name → uuid
}

func seed(t *testing.T, e *env) world {
	t.Helper()
	w := world{groups: map[string]string{}}
	group := func(name string, superuser bool, attrs string) {
		w.groups[name] = e.ak.AddGroup(authentikstub.Group{
			Name: name, IsSuperuser: superuser, Attributes: json.RawMessage(attrs)})
	}
	// Every form an admin may type: an unquoted number, a list mixing both, spaces.
	group("makerspace-admins", false, `{"discord_role_id":1187654321098765431}`)
	group("makerspace-editors", false, `{"discord_role_id":["1187654321098765432",41771983423143936]}`)
	group("makerspace-members", false, `{"discord_role_id":" 41771983423143936 "}`)
	group("retired-role", false, `{"discord_role_id":"1187654321098765433"}`)
	group("broken-mapping", false, `{"discord_role_id":{"id":1}}`)
	group("staff", false, `{"notes":"managed by hand"}`)
	group("authentik Admins", true, `{"discord_role_id":"1187654321098765431"}`)

	w.nelly = e.ak.AddUser(authentikstub.User{Username: "nelly", Name: "Nelly",
		Email: "nelly@example.org", IsActive: true, Type: "external",
		Attributes: json.RawMessage(nellyAttributes)})
	for _, g := range []string{"staff", "retired-role", "authentik Admins", "broken-mapping"} {
		e.ak.AddMember(w.groups[g], w.nelly)
	}
	e.ak.AddConnection("discord", w.nelly, nellyID)

	w.pending = e.ak.AddUser(authentikstub.User{Username: "pat", Name: "Pat", IsActive: true,
		Type: "external", Attributes: json.RawMessage(`{}`)})
	e.ak.AddConnection("discord", w.pending, pendingID)
	w.outsider = e.ak.AddUser(authentikstub.User{Username: "olli", Name: "Olli", IsActive: true,
		Type: "external", Attributes: json.RawMessage(`{"keep":"me"}`)})
	e.ak.AddMember(w.groups["makerspace-members"], w.outsider)
	e.ak.AddMember(w.groups["staff"], w.outsider)
	e.ak.AddConnection("discord", w.outsider, strangerID)

	roles := []discordstub.Role{}
	for i, id := range []string{roleAdmin, roleEditor, roleRetired, roleMember} {
		r := discordstub.ExampleRole()
		r.ID, r.Name, r.Position = id, []string{"Admin", "Editor", "Retired", "Member"}[i], 4-i
		roles = append(roles, r)
	}
	e.dc.SetRoles(roles...)

	m := discordstub.ExampleMember()
	m.User.ID, m.User.Username, m.User.GlobalName = nellyID, "nelly", discordstub.Ptr("Nelly N.")
	m.Roles = []string{roleMember, roleAdmin}
	mustSetMember(t, e, m)
	serveAvatar(t, e, m)

	p := discordstub.ExampleMember()
	p.User.ID, p.User.Username, p.Pending = pendingID, "pat", true
	p.Roles = []string{roleMember}
	mustSetMember(t, e, p)
	serveAvatar(t, e, p)
	return w
}

func mustSetMember(t *testing.T, e *env, m discordstub.Member) {
	t.Helper()
	if err := e.dc.SetMember(m); err != nil {
		t.Fatalf("seed member %s: %v", m.User.ID, err)
	}
}

// serveAvatar puts a real image on the stand-in's CDN as m's avatar, so syncs host it.
func serveAvatar(t *testing.T, e *env, m discordstub.Member) {
	t.Helper()
	if m.User.Avatar != nil {
		e.dc.SetAvatar("avatars/"+m.User.ID+"/"+*m.User.Avatar+".png", "image/png",
			readImage(t, "tux.png"))
	}
}

func TestGate(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	e.start()

	for _, tc := range []struct {
		name, id    string
		allowed     bool
		reason      string
		groups      []any
		msgContains string
	}{
		{"member", nellyID, true, "member",
			[]any{"makerspace-admins", "makerspace-editors", "makerspace-members"}, "Welcome"},
		{"pending member", pendingID, false, "pending", []any{}, "screening"},
		{"not a member", strangerID, false, "not_member", []any{}, "only for members"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.hook("/v1/authentik/gate", map[string]string{"discord_id": tc.id})
			if status != http.StatusOK {
				t.Fatalf("status = %d, body %v", status, body)
			}
			if body["allowed"] != tc.allowed || body["reason"] != tc.reason {
				t.Errorf("allowed, reason = %v, %v; want %v, %v",
					body["allowed"], body["reason"], tc.allowed, tc.reason)
			}
			if diff := cmp.Diff(tc.groups, body["groups"]); diff != "" {
				t.Errorf("groups (-want +got):\n%s", diff)
			}
			if msg, _ := body["message"].(string); !strings.Contains(msg, tc.msgContains) {
				t.Errorf("message = %q, want it to mention %q", msg, tc.msgContains)
			}
		})
	}
	if c := e.ak.Counts(); c.Writes != 0 {
		t.Errorf("the gate wrote to Authentik %d times", c.Writes)
	}
}

func TestGate_PendingAllowedWhenConfigured(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	e.start("BRIDGE_GATE_ALLOW_PENDING=true")
	_, body := e.hook("/v1/authentik/gate", map[string]string{"discord_id": pendingID})
	if body["allowed"] != true {
		t.Errorf("pending member refused although BRIDGE_GATE_ALLOW_PENDING=true: %v", body)
	}
}

// attrsOf decodes a user's attributes into raw values per key.
func attrsOf(t *testing.T, raw json.RawMessage) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("attributes %s: %v", raw, err)
	}
	return m
}

func TestSyncHook_ConvergesAndKeepsForeignData(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.start()

	before := attrsOf(t, json.RawMessage(nellyAttributes))
	status, body := e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": nellyID, "user_pk": w.nelly})
	if status != http.StatusOK || body["status"] != "changed" {
		t.Fatalf("sync = %d %v, want 200 changed", status, body)
	}
	if diff := cmp.Diff([]any{"makerspace-admins", "makerspace-editors", "makerspace-members"},
		sortedAny(body["added"])); diff != "" {
		t.Errorf("added (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]any{"retired-role"}, body["removed"]); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}

	// Exactly the desired managed groups, plus every group the bridge does not manage:
	// staff (no attribute), broken-mapping (invalid, so unmanaged) and the superuser group.
	want := []string{"authentik Admins", "broken-mapping", "makerspace-admins",
		"makerspace-editors", "makerspace-members", "staff"}
	if diff := cmp.Diff(want, e.ak.UserGroupNames(w.nelly)); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}

	after := attrsOf(t, e.ak.UserAttributes(w.nelly))
	for k, v := range before {
		if !bytes.Equal(after[k], v) {
			t.Errorf("attribute %q changed:\n before %s\n after  %s", k, v, after[k])
		}
	}
	var d struct {
		ID, Username string
		GlobalName   string `json:"global_name"`
		Roles        []string
		SyncedAt     string `json:"synced_at"`
	}
	if err := json.Unmarshal(after["discord"], &d); err != nil {
		t.Fatalf("attributes.discord: %v", err)
	}
	if d.ID != nellyID || d.Username != "nelly" || d.GlobalName != "Nelly N." || d.SyncedAt == "" {
		t.Errorf("attributes.discord = %s", after["discord"])
	}
	if diff := cmp.Diff([]string{roleMember, roleAdmin}, d.Roles); diff != "" {
		t.Errorf("attributes.discord.roles (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(after["discord"]), `"id":"`+nellyID+`"`) {
		t.Errorf("the Discord ID is not written as a string: %s", after["discord"])
	}

	// A second identical sync reads, and writes nothing.
	e.ak.ResetCounts()
	status, body = e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": nellyID, "user_pk": w.nelly})
	if status != http.StatusOK || body["status"] != "unchanged" {
		t.Fatalf("second sync = %d %v, want 200 unchanged", status, body)
	}
	c := e.ak.Counts()
	if c.Writes != 0 || c.Puts != 0 {
		t.Errorf("second sync made %d writes (%d PUTs): %v", c.Writes, c.Puts, c.ByRoute)
	}
	if c.Reads > 2 {
		t.Errorf("second sync made %d Authentik reads, want at most 2: %v", c.Reads, c.ByRoute)
	}
}

func TestSyncHook_MemberWhoLeftLosesManagedGroupsOnly(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.start()

	status, body := e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": strangerID, "user_pk": w.outsider})
	if status != http.StatusOK || body["status"] != "changed" {
		t.Fatalf("sync = %d %v", status, body)
	}
	if diff := cmp.Diff([]string{"staff"}, e.ak.UserGroupNames(w.outsider)); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}
	if got := string(e.ak.UserAttributes(w.outsider)); got != `{"keep":"me"}` {
		t.Errorf("attributes of a non-member changed to %s", got)
	}
}

func TestSyncCLI_DryRunThenApply(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)

	out, errOut, code := e.cli("sync", "--discord-id", nellyID, "--dry-run")
	if code != 0 {
		t.Fatalf("dry run exited %d: %s", code, errOut)
	}
	if !containsAll(out, "+ group makerspace-admins", "- group retired-role",
		"~ attributes.discord", "dry run: nothing was changed") {
		t.Errorf("dry-run output lacks the plan:\n%s", out)
	}
	if c := e.ak.Counts(); c.Writes != 0 {
		t.Fatalf("dry run wrote %d times", c.Writes)
	}

	out, errOut, code = e.cli("sync", "--discord-id", nellyID)
	if code != 0 || !strings.Contains(out, "applied 6 change(s)") || !strings.Contains(out, "~ attributes.avatar") {
		t.Fatalf("sync exited %d:\n%s\n%s", code, out, errOut)
	}
	if !contains(e.ak.UserGroupNames(w.nelly), "makerspace-admins") {
		t.Error("sync did not add the admin group")
	}
	out, _, code = e.cli("sync", "--discord-id", nellyID)
	if code != 0 || !strings.Contains(out, "already in sync") {
		t.Errorf("second sync: exit %d\n%s", code, out)
	}
}

func TestCheck(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	out, _, code := e.cli("check")
	if code != 0 {
		t.Fatalf("check exited %d:\n%s", code, out)
	}
	for _, want := range []string{"PASS configuration", "PASS discord bot token",
		"PASS discord guild", "PASS discord roles", "PASS authentik token",
		"PASS authentik groups", "PASS authentik discord source", "broken-mapping"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, akToken) || strings.Contains(out, botToken) ||
		strings.Contains(out, webhookSecret) {
		t.Errorf("check printed a secret:\n%s", out)
	}

	e.vars = append(e.vars, "BRIDGE_AUTHENTIK_TOKEN=wrong-token")
	out, _, code = e.cli("check")
	if code == 0 || !strings.Contains(out, "FAIL authentik token") {
		t.Errorf("check with a wrong token: exit %d\n%s", code, out)
	}
}

func TestConfig_EveryProblemAtOnce(t *testing.T) {
	e := newEnv(t)
	e.vars = []string{"BRIDGE_DISCORD_GUILD_ID=abc", "BRIDGE_AVATAR_STORE=ftp"}
	_, errOut, code := e.cli("serve")
	if code == 0 {
		t.Fatal("serve started without a valid configuration")
	}
	for _, v := range []string{"BRIDGE_DISCORD_TOKEN", "BRIDGE_DISCORD_GUILD_ID",
		"BRIDGE_AUTHENTIK_URL", "BRIDGE_AUTHENTIK_TOKEN", "BRIDGE_WEBHOOK_SECRET",
		"BRIDGE_AVATAR_STORE"} {
		if !strings.Contains(errOut, v) {
			t.Errorf("error output does not name %s:\n%s", v, errOut)
		}
	}
}

func sortedAny(v any) []any {
	list, _ := v.([]any)
	out := append([]any(nil), list...)
	sort.Slice(out, func(i, j int) bool { return out[i].(string) < out[j].(string) })
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
