package e2e

// Breaker tests: each one reproduces a problem found while trying to break issue 2's bridge.
// They reuse the e2e harness and seed (harness_test.go, hooks_test.go): copy them into
// test/e2e and run `go test ./test/e2e -run Breaker`. Every test here fails today.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/discord-authentik-bridge/bridge/test/authentikstub"
)

// withAuthentikAt points the bridge at another Authentik base URL (a tamper proxy).
func (e *env) withAuthentikAt(url string) {
	e.vars = append(e.vars, "BRIDGE_AUTHENTIK_URL="+url)
}

// Regression (found by trying to break the bridge): the ownership check ("a user whose attributes.discord.id already names another
// Discord account is refused") only understands a string id. An id stored as a JSON number
// (as the Python property mapping the bridge replaces may have written it) passes the check,
// and the hook hands the posted Discord account's roles to the user and overwrites the
// attribute.
func TestSyncHook_RefusesUserOfAnotherAccount(t *testing.T) {
	for _, tc := range []struct{ name, discord string }{
		{"id as string (control)", `{"id":"` + strangerID + `","username":"olli"}`},
		{"id as number", `{"id":` + strangerID + `,"username":"olli"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			w := seed(t, e)
			attrs := `{"keep":1,"discord":` + tc.discord + `}`
			// pat's connection links them to another account, and their attributes name a
			// third one: nothing ties them to nelly's account.
			e.ak.SetUserAttributes(w.pending, json.RawMessage(attrs))
			e.start()
			before := e.ak.UserGroupNames(w.pending)

			status, body := e.hook("/v1/authentik/sync",
				map[string]any{"discord_id": nellyID, "user_pk": w.pending})
			if status != http.StatusConflict || body["status"] != "refused" {
				t.Errorf("sync of a user owned by another Discord account = %d %v, "+
					"want 409 refused", status, body)
			}
			if got := string(e.ak.UserAttributes(w.pending)); got != attrs {
				t.Errorf("attributes of another account's user rewritten:\n got  %s\n want %s",
					got, attrs)
			}
			if got := e.ak.UserGroupNames(w.pending); fmt.Sprint(got) != fmt.Sprint(before) {
				t.Errorf("groups changed from %v to %v", before, got)
			}
		})
	}
}

// Regression (found by trying to break the bridge): Authentik derives is_superuser from every group a user is in *including their
// ancestors* (User.all_groups() = groups.with_ancestors()). The bridge checks only the managed
// group's own is_superuser flag, so a discord_role_id group whose parent is a superuser group
// is managed, and a Discord role then grants full control of Authentik although
// BRIDGE_ALLOW_SUPERUSER_GROUPS is false. The stand-in has no hierarchy, so a proxy adds the
// parent to the group list the way Authentik serves it ("parents": [uuid]).
func TestMapping_RefusesGroupUnderSuperuserParent(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	admins := w.groups["authentik Admins"] // is_superuser: true
	px := newTamper(t, e.ak.URL())
	px.set(func(px *tamper) {
		px.rewrite = func(r *http.Request, status int, body []byte) []byte {
			if r.Method != http.MethodGet || r.URL.Path != "/api/v3/core/groups/" || status != 200 {
				return body
			}
			return editJSON(t, body, func(m map[string]any) {
				for _, g := range m["results"].([]any) {
					g := g.(map[string]any)
					if g["name"] == "makerspace-admins" {
						g["parents"] = []any{admins}
					}
				}
			})
		}
	})
	e.withAuthentikAt(px.srv.URL)
	e.start()

	status, body := e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": nellyID, "user_pk": w.nelly})
	if status != http.StatusOK {
		t.Fatalf("sync = %d %v", status, body)
	}
	if contains(e.ak.UserGroupNames(w.nelly), "makerspace-admins") {
		t.Errorf("the bridge added the user to makerspace-admins, a child of the superuser "+
			"group %q, with BRIDGE_ALLOW_SUPERUSER_GROUPS=false; groups now %v",
			"authentik Admins", e.ak.UserGroupNames(w.nelly))
	}
	out, _, _ := e.cli("check")
	if !strings.Contains(out, "superuser") {
		t.Errorf("bridge check does not report the superuser-parented group:\n%s", out)
	}
}

// Regression (found by trying to break the bridge): a user read whose answer lacks "attributes" (a proxy or WAF stripping fields, a
// partial answer) is taken as a user with no attributes. The read-modify-write then PATCHes
// attributes = {"discord": …}, wiping every key the bridge does not own. Authentik always
// serialises attributes, so a missing member should be a refused read, not {}.
func TestSync_IncompleteUserReadWritesNothing(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	userPath := fmt.Sprintf("/api/v3/core/users/%d/", w.nelly)
	px := newTamper(t, e.ak.URL())
	px.set(func(px *tamper) {
		px.rewrite = func(r *http.Request, status int, body []byte) []byte {
			if r.Method != http.MethodGet || r.URL.Path != userPath || status != 200 {
				return body
			}
			return editJSON(t, body, func(m map[string]any) { delete(m, "attributes") })
		}
	})
	e.withAuthentikAt(px.srv.URL)
	e.start()

	e.hook("/v1/authentik/sync", map[string]any{"discord_id": nellyID, "user_pk": w.nelly})
	after := attrsOf(t, e.ak.UserAttributes(w.nelly))
	for k, v := range attrsOf(t, json.RawMessage(nellyAttributes)) {
		if !bytes.Equal(after[k], v) {
			t.Errorf("foreign attribute %q lost or changed: before %s, after %s", k, v, after[k])
		}
	}
}

// Regression (found by trying to break the bridge): a group whose discord_role_id is the guild ID (the @everyone role, i.e. "every
// member") is accepted as a valid mapping, but the bridge drops @everyone from every member's
// roles, so the group can never be desired: every member is silently stripped from it, and
// `bridge check` reports nothing.
func TestSync_EveryoneRoleFeedsGroup(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	everyone := e.ak.AddGroup(authentikstub.Group{Name: "guild-members",
		Attributes: json.RawMessage(`{"discord_role_id":"` + guildID + `"}`)})
	e.ak.AddMember(everyone, w.nelly)
	out, _, _ := e.cli("check")
	e.start()

	status, body := e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": nellyID, "user_pk": w.nelly})
	if status != http.StatusOK {
		t.Fatalf("sync = %d %v", status, body)
	}
	if !contains(e.ak.UserGroupNames(w.nelly), "guild-members") &&
		!strings.Contains(out, "guild-members") {
		t.Errorf("a guild member was removed from the group mapped to @everyone (%s), and "+
			"bridge check did not flag the mapping; removed: %v", guildID, body["removed"])
	}
}

// Regression (found by trying to break the bridge): a 429 whose retry_after is absurdly large (> 1e6 s) is treated as "1 second", and
// the call is retried up to 4 times within the hook's deadline, instead of giving up at once.
// Discord counts every 429 toward the invalid-request limit that bans a bot's IP.
func TestGate_HugeRetryAfterIsNotRetriedEarly(t *testing.T) {
	for _, global := range []bool{false, true} {
		t.Run(fmt.Sprintf("global=%v", global), func(t *testing.T) {
			e := newEnv(t)
			seed(t, e)
			e.start()
			e.dc.ResetCounts()
			e.dc.RateLimitNext(100, 1e7, global)
			status, body := e.hook("/v1/authentik/gate", map[string]string{"discord_id": nellyID})
			e.dc.RateLimitNext(0, 0, false)
			if status != http.StatusServiceUnavailable {
				t.Errorf("gate = %d %v, want 503", status, body)
			}
			if c := e.dc.Counts(); c.RateLimited > 1 {
				t.Errorf("Discord asked to wait 1e7 s, the bridge asked again %d times "+
					"within one hook call", c.RateLimited-1)
			}
		})
	}
}

// Regression (found by trying to break the bridge): apply adds groups first and stops at the first failure, so a single add that
// Authentik refuses for good (here 403 on one group, as per-object RBAC can do) blocks every
// removal of the same sync: a user who lost a role keeps the group it fed, on every retry.
// Removing privileges should not depend on an unrelated grant succeeding.
func TestSync_FailedAddDoesNotBlockRemovals(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	deny := "/api/v3/core/groups/" + w.groups["makerspace-admins"] + "/add_user/"
	denyingAK := newDenyProxy(t, e.ak.URL(), http.MethodPost, deny)
	e.withAuthentikAt(denyingAK)
	e.start()

	for i := 0; i < 2; i++ {
		e.hook("/v1/authentik/sync", map[string]any{"discord_id": nellyID, "user_pk": w.nelly})
	}
	if contains(e.ak.UserGroupNames(w.nelly), "retired-role") {
		t.Errorf("after two syncs the user still holds retired-role (role lost) because an "+
			"unrelated add was refused; groups %v", e.ak.UserGroupNames(w.nelly))
	}
}

// newDenyProxy answers 403 to one method and path and forwards everything else.
func newDenyProxy(t *testing.T, target, method, path string) string {
	t.Helper()
	px := newTamper(t, target)
	px.set(func(px *tamper) {
		px.answer = func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != method || r.URL.Path != path {
				return false
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"detail":"You do not have permission to perform this action."}`)
			return true
		}
	})
	return px.srv.URL
}

// Regression (found by trying to break the bridge): a managed group deleted in Authentik stays in the cached mapping for up to
// BRIDGE_MAPPING_REFRESH; every sync that would add a user to it fails (404) and, because
// adds come first, applies nothing else.
func TestSync_DeletedGroupRefreshesMapping(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.start()
	e.ak.DeleteGroup(w.groups["makerspace-admins"])
	status, body := e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": nellyID, "user_pk": w.nelly})
	if status != http.StatusOK {
		t.Errorf("sync right after a managed group was deleted = %d %v", status, body)
	}
}

// Regression (found by trying to break the bridge): the gate hook has no deadline of its own (only the request's context), so a
// Discord 429 whose retry_after is below the client's 30 s cap is waited out in full. The
// shipped blueprint's gate policy reads with timeout=(3, 5): Authentik gives up after 5 s and
// refuses the login with its generic "unavailable" message, while the bridge keeps waiting.
// The sync hook has BRIDGE_SYNC_DEADLINE; the gate should have a bound below the policy's
// read timeout too.
func TestGate_AnswersWithinBlueprintTimeout(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	e.start()
	e.dc.RateLimitNext(1, 6, false)
	// The same read timeout as deploy/authentik/discord-bridge.yaml's gate policy.
	client := &http.Client{Timeout: 5 * time.Second}
	req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/authentik/gate",
		strings.NewReader(`{"discord_id":"`+nellyID+`"}`))
	req.Header.Set("Authorization", "Bearer "+webhookSecret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("the gate did not answer within the blueprint's 5 s read timeout: %v", err)
	}
	resp.Body.Close()
}

// Regression (found by trying to break the bridge): when a member leaves, the sync removes the managed groups but leaves
// attributes.discord as it was, still listing the roles the person no longer holds (and no
// sign that they left). Anything that reads attributes.discord.roles (a property mapping, an
// app through a claim) keeps seeing e.g. the admin role.
func TestSync_LeaverLosesRolesInAttribute(t *testing.T) {
	e := newEnv(t)
	w := seed(t, e)
	e.start()
	call := map[string]any{"discord_id": nellyID, "user_pk": w.nelly}
	if status, body := e.hook("/v1/authentik/sync", call); status != http.StatusOK {
		t.Fatalf("first sync = %d %v", status, body)
	}
	e.dc.RemoveMember(nellyID)
	if status, body := e.hook("/v1/authentik/sync", call); status != http.StatusOK {
		t.Fatalf("sync after leaving = %d %v", status, body)
	}
	var d struct {
		Roles []string `json:"roles"`
	}
	raw := attrsOf(t, e.ak.UserAttributes(w.nelly))["discord"]
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Roles) != 0 {
		t.Errorf("after leaving the guild, attributes.discord still lists roles %v: %s",
			d.Roles, raw)
	}
}

// Regression (found by trying to break the bridge): the ownership check treats the bridge's own attributes.discord.id as the identity,
// even when Authentik's source connection (the real link) now names another account. A user
// who re-links their Authentik account to a new Discord account (lost the old one) is refused
// by every sync, hook and CLI alike, forever, and keeps the managed groups of the old
// account (here the admin group) until an admin edits the attribute by hand.
func TestSync_RelinkedUserMovesToNewAccount(t *testing.T) {
	const newID = "80351110224678950"
	e := newEnv(t)
	w := seed(t, e)
	m := discordstubMember(newID, "nelly-new", roleMember)
	mustSetMember(t, e, m)
	e.start()
	if status, body := e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": nellyID, "user_pk": w.nelly}); status != http.StatusOK {
		t.Fatalf("first sync = %d %v", status, body)
	}

	// The person re-links the account: old connection gone, new one saved.
	const nellyConnPK = 11 // the seed's first connection
	e.ak.DeleteConnection(nellyConnPK)
	e.ak.AddConnection("discord", w.nelly, newID)
	if out, _, _ := e.cli("sync", "--discord-id", nellyID, "--dry-run"); !strings.Contains(out,
		"no Authentik user is linked") {
		t.Fatalf("old connection still present:\n%s", out)
	}

	status, body := e.hook("/v1/authentik/sync",
		map[string]any{"discord_id": newID, "user_pk": w.nelly})
	out, errOut, code := e.cli("sync", "--discord-id", newID)
	if status != http.StatusOK || code != 0 {
		t.Errorf("sync of the newly linked account refused: hook %d %v; cli exit %d %s%s",
			status, body["message"], code, out, errOut)
	}
	if contains(e.ak.UserGroupNames(w.nelly), "makerspace-admins") {
		t.Errorf("the user keeps makerspace-admins from the old Discord account; groups %v",
			e.ak.UserGroupNames(w.nelly))
	}
}

// Regression (found by trying to break the bridge): `bridge sync --dry-run` now opens the
// store, so it creates BRIDGE_DATA_DIR and bridge.db and runs the schema migrations: a dry
// run from another directory leaves ./data behind, and a newer binary's dry run migrates the
// production database.
func TestSyncCLI_DryRunCreatesNoDatabase(t *testing.T) {
	e := newEnv(t)
	seed(t, e)
	e.vars = append(e.vars, "BRIDGE_DATA_DIR="+e.dataDir+"/sub")
	out, _, code := e.cli("sync", "--discord-id", nellyID, "--dry-run")
	if code != 0 || e.ak.Counts().Writes != 0 {
		t.Fatalf("dry run: exit %d, writes %d\n%s", code, e.ak.Counts().Writes, out)
	}
	if _, err := os.Stat(e.dataDir + "/sub"); err == nil {
		t.Error("dry run created the data directory")
	}
}
