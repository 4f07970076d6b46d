package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/google/go-cmp/cmp"

	"github.com/discord-authentik-bridge/bridge/avatars"
	"github.com/discord-authentik-bridge/bridge/config"
	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/groupmatch"
	"github.com/discord-authentik-bridge/bridge/guild"
	"github.com/discord-authentik-bridge/bridge/reconcile"
)

const memberID = "80351110224600002"

// sampleStatus is a bridge with one of everything the page shows.
func sampleStatus() *fakeStatus {
	now := time.Now()
	admins := groupmatch.Group{UUID: "uuid-admins", Name: "makerspace-admins"}
	editors := groupmatch.Group{UUID: "uuid-editors", Name: "makerspace-editors"}
	plan := &reconcile.Plan{
		DiscordID: memberID,
		Membership: guild.Membership{State: guild.StateMember,
			Member: &discordgo.Member{User: &discordgo.User{ID: memberID, Username: "nelly"}}},
		Users: []reconcile.UserPlan{{
			PK: 10, Username: "nelly-ak",
			Add:    []reconcile.GroupChange{{Group: admins, Reason: "member has discord role 111"}},
			Remove: []reconcile.GroupChange{{Group: editors, Reason: "member lost discord role 222"}},
			Attributes: []reconcile.AttrChange{{Key: "discord",
				After: json.RawMessage(`{"id":"80351110224600002"}`)}},
		}},
	}
	return &fakeStatus{
		mapping: &MappingView{
			Groups: []MappedGroup{{UUID: "uuid-admins", Name: "makerspace-admins", Members: 7,
				Roles: []Role{{ID: "111", Name: "Admin", Color: 0xe91e63, Known: true,
					Groups: []string{"makerspace-admins"}}}},
				{UUID: "uuid-x", Name: "<b>sneaky</b>", Members: -1,
					Roles: []Role{{ID: "333"}}},
				{UUID: "uuid-ghost", Name: "ghost-group", Members: 0,
					Roles:   []Role{{ID: "999999999999999999"}},
					Missing: []string{"999999999999999999"}}},
			UnusedRoles: []Role{{ID: "444", Name: "Lurker", Color: 0x1abc9c, Known: true}},
			Invalid: []InvalidEntry{
				{GroupUUID: "uuid-bad", GroupName: "broken-group",
					Reason: `string "12ab" is not all digits`, Value: `"12ab"`},
				{GroupUUID: "uuid-root", GroupName: "root-group",
					Reason: "group is marked superuser; the bridge manages such a group only when BRIDGE_ALLOW_SUPERUSER_GROUPS=true"},
			},
			UnknownRoles: []UnknownRole{{RoleID: "999999999999999999",
				Groups: []string{"ghost-group"}}},
			RolesFetched: now, MappingAge: 3 * time.Second,
		},
		search: &SearchResult{DirectoryReady: true, AuthentikSearched: true,
			Hits: []SearchHit{{Entry: reconcile.Entry{DiscordID: memberID, Username: "nelly",
				GlobalName: "Nelly N", InGuild: true, UserPKs: []int32{10}},
				Users: []LinkedUser{{PK: 10, Username: "nelly-ak"}}}},
			Unlinked: []string{"orphan-user"}},
		member: &MemberView{
			DiscordID: memberID, State: "member", Username: "nelly", DisplayName: "Nelly N",
			Roles: []Role{{ID: "111", Name: "Admin", Color: 0xe91e63, Known: true,
				Groups: []string{"makerspace-admins"}}},
			Desired: []string{"makerspace-admins"},
			LastSync: &reconcile.SyncRecord{DiscordID: memberID, Result: reconcile.ResultError,
				Trigger: "gateway:member_update", Error: "authentik answered 503",
				AvatarError: "cdn answered 404", At: now.Add(-time.Minute)},
			Plan: plan,
			Users: []MemberUser{{PK: 10, Username: "nelly-ak",
				AvatarURL:   "http://bridge.example/avatars/abc.png",
				GroupsNow:   []string{"makerspace-editors", "staff"},
				GroupsAfter: []string{"makerspace-admins", "staff"}}},
			Recent: []reconcile.Change{{ID: 5, Kind: reconcile.KindGroupAdd, Target: "staff",
				Username: "nelly-ak", Trigger: "hook", At: now}},
		},
		changes: changes(120),
		health: Health{
			Version: "v9", Started: now.Add(-time.Hour),
			Ready: []string{"discord gateway: enable the Server Members intent"},
			Gateway: GatewayHealth{Enabled: true, GatewayStatus: discord.GatewayStatus{
				State: discord.GatewayIntentRefused, Reason: "close code 4014", Sessions: 2}},
			LastEvent: now.Add(-time.Minute),
			Pass: PassHealth{Interval: time.Hour, Err: reconcile.ErrRemovalGuard.Error(),
				Last: &reconcile.PassReport{Trigger: "full_pass:timer", Started: now.Add(-2 * time.Minute),
					Ended: now.Add(-time.Minute), Members: 60, Linked: 58, Stale: 5, Applied: 2,
					Changes: 4, Errors: 3, Queued: 2, Superseded: 1,
					Stopped:     "40 of 58 linked users would lose managed groups",
					FirstErrors: []string{"123: boom"}}},
			Queue:       reconcile.QueueStats{Depth: 17, Retries: 5, Failed: 2, LastError: "timeout"},
			Discord:     discord.Stats{Calls: 99, RateLimited: 3, RateLimitWait: 4500 * time.Millisecond},
			Avatars:     avatars.Stats{Syncs: 8, Failures: map[avatars.Kind]int64{avatars.KindStatus: 2}},
			AvatarStore: "s3",
			Authentik: AuthentikHealth{URL: "https://auth.example", Checked: now,
				Err: "dial tcp: connection refused"},
			MappingLoaded: true, Managed: 6, Invalid: 2, UnknownRoles: 1, UnknownGroups: 1,
		},
		pass: &reconcile.PassReport{Members: 60, Linked: 58, Stale: 1, Removals: 1,
			UnknownRoles: []string{"999999999999999999"}, Plans: []*reconcile.Plan{plan}},
		outcome: &reconcile.Outcome{Plan: plan, Result: reconcile.ResultChanged,
			Added: []string{"makerspace-admins"}, Removed: []string{"makerspace-editors"},
			Changes: make([]reconcile.Change, 3)},
	}
}

// changes makes n audit entries with IDs n..1, newest first.
func changes(n int) []reconcile.Change {
	out := make([]reconcile.Change, n)
	for i := range out {
		id := int64(n - i)
		kind := reconcile.KindGroupAdd
		if id%2 == 0 {
			kind = reconcile.KindAttribute
		}
		out[i] = reconcile.Change{ID: id, Kind: kind, DiscordID: memberID, UserPK: 10,
			Username: fmt.Sprintf("user-%d", id), Target: "group", Before: "not a member",
			After: "member", Reason: "role", Trigger: "admin:alice", At: time.Now()}
	}
	return out
}

func devBridge(t *testing.T, st Status, mod func(*Options)) *bridge {
	t.Helper()
	return newBridge(t, st, func(o *Options) {
		o.Admin.DevNoLogin = true
		if mod != nil {
			mod(o)
		}
	})
}

func TestPages_Render(t *testing.T) {
	tests := []struct {
		path  string
		wants []string
	}{
		{"/", []string{
			`id="not-ready"`, "enable the Server Members intent",
			`data-testid="gateway-state">intent_refused<`, "close code 4014",
			`id="queue-depth">17<`, "5</dd>", // retries
			`id="rate-limited">3 times<`, `id="rate-limit-wait">4.5s<`,
			`id="avatar-store">s3<`, "status: 2",
			`id="authentik-state">unreachable<`, "connection refused",
			`id="pass-stopped"`, "40 of 58 linked users", "123: boom", "every 1h<",
			`id="sync-all-preview"`,
			"5 of 58 linked users", `data-changes="4"`,
			"2 members synced by the pass: 4 changes, 3 errors; 2 handed to the work queue to " +
				"retry; 1 left to newer syncs (gateway events, logins)</dd>",
			`data-managed="6" data-unknown-roles="1" data-invalid="2"`,
			`<a href="/mapping#managed">6 managed groups</a>`,
			">1 fed by a role the guild does not have</a>", ">2 refused</a> (not managed)",
		}},
		{"/mapping", []string{
			`id="mapping-table"`, "makerspace-admins", `fill="#e91e63"`, ">Admin<",
			"&lt;b&gt;sneaky&lt;/b&gt;", "unknown role",
			`id="invalid-mappings"`, "broken-group", "is not all digits", "root-group",
			"marked superuser", `id="unknown-role-table"`, "999999999999999999",
			`data-group="ghost-group" data-missing="999999999999999999"`,
			`data-testid="missing-role-badge"`, "The group stays managed",
			`data-testid="managed-count">3<`, `data-testid="unknown-count">1<`,
			`data-testid="invalid-count">2<`,
			`id="unused-roles"`, "Lurker", `fill="#1abc9c"`,
		}},
		{"/members?q=nell", []string{
			`value="nell"`, `id="search-results"`, `href="/members/` + memberID + `"`,
			"nelly-ak", "Nelly N", "orphan-user",
		}},
		{"/members?q=" + memberID, []string{`id="exact-id-link"`}},
		{"/members/" + memberID, []string{
			`id="member-avatar"`, `src="http://bridge.example/avatars/abc.png"`,
			`width="64"`, ">Admin<", "→ <strong>makerspace-admins</strong>",
			`id="member-desired"`, "authentik answered 503", "cdn answered 404",
			`data-differs="true"`, "join <strong>makerspace-admins</strong>",
			"leave <strong>makerspace-editors</strong>", "attributes.discord",
			`id="preview-button"`, `id="downstream"`,
			"makerspace-editors, staff", "makerspace-admins, staff",
			`data-testid="app-role" data-role="admin"`, "(now editor)",
		}},
		{"/activity", []string{
			`id="activity-table"`, `data-testid="activity-row" data-id="120"`,
			`data-testid="activity-row" data-id="71"`, `id="activity-older"`,
			`href="/activity?before=71"`, "admin:alice",
		}},
	}
	st := sampleStatus()
	b := devBridge(t, st, func(o *Options) {
		o.Admin.AppRoles = []config.AppRole{
			{Name: "admin", Groups: []string{"makerspace-admins", "inventory-admins"}},
			{Name: "editor", Groups: []string{"makerspace-editors"}},
		}
	})
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			p := b.get(tt.path)
			if p.Status != http.StatusOK {
				t.Fatalf("status %d, want 200; body:\n%s", p.Status, p.Body)
			}
			mustContain(t, tt.path, p.Body, tt.wants...)
			if strings.Contains(p.Body, "<b>sneaky</b>") {
				t.Errorf("%s: a group name went into the page unescaped", tt.path)
			}
			for h, want := range map[string]string{
				"Content-Type":    "text/html; charset=UTF-8",
				"X-Frame-Options": "DENY",
				"Cache-Control":   "no-store",
			} {
				if got := p.Header.Get(h); got != want {
					t.Errorf("%s: header %s = %q, want %q", tt.path, h, got, want)
				}
			}
			mustContain(t, "CSP", p.Header.Get("Content-Security-Policy"), "default-src 'none'",
				"form-action 'self'", "frame-ancestors 'none'")
		})
	}
}

func TestPages_NothingFromOutside(t *testing.T) {
	b := devBridge(t, sampleStatus(), nil)
	for _, path := range []string{"/", "/mapping", "/members/" + memberID, "/activity"} {
		p := b.get(path)
		for _, bad := range []string{`src="http`, `href="http`, "@import", "fonts.googleapis"} {
			if strings.Contains(strings.ReplaceAll(p.Body,
				`src="http://bridge.example/avatars/`, ""), bad) {
				t.Errorf("%s loads something from outside: %q", path, bad)
			}
		}
	}
	for _, asset := range []string{"style.css", "app.js"} {
		p := b.get("/static/" + asset)
		if p.Status != http.StatusOK || len(p.Body) == 0 {
			t.Errorf("GET /static/%s: status %d, %d bytes", asset, p.Status, len(p.Body))
		}
		if strings.Contains(p.Body, "http://") || strings.Contains(p.Body, "https://") {
			t.Errorf("%s refers to another site", asset)
		}
	}
}

func TestMember_PlanErrorStillRenders(t *testing.T) {
	st := sampleStatus()
	st.member = &MemberView{DiscordID: memberID, PlanError: "look up guild member: discord answered 502"}
	b := devBridge(t, st, nil)
	p := b.get("/members/" + memberID)
	if p.Status != http.StatusOK {
		t.Fatalf("status %d, want 200", p.Status)
	}
	mustContain(t, "member page", p.Body, `data-differs="unknown"`, "discord answered 502",
		`id="member-avatar-none"`, "has not synced this account yet")
}

func TestMember_BadIDAndFailure(t *testing.T) {
	st := sampleStatus()
	b := devBridge(t, st, nil)
	if p := b.get("/members/12ab"); p.Status != http.StatusBadRequest ||
		!strings.Contains(p.Body, "discord_id must hold only digits") {
		t.Errorf("GET /members/12ab: status %d, want 400 page naming the problem", p.Status)
	}
	st.memberErr = errors.New("store closed: secret-detail")
	p := b.get("/members/" + memberID)
	if p.Status != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", p.Status)
	}
	mustContain(t, "error page", p.Body, "<!doctype html>", "the bridge&#39;s log has the details")
	if strings.Contains(p.Body, "secret-detail") {
		t.Errorf("an internal error's detail reached the page")
	}
	mustContain(t, "log", b.logs.String(), "secret-detail")
}

func TestActions_CSRF(t *testing.T) {
	tests := []struct {
		name  string
		path  string
		token func(real string) url.Values
		want  int
	}{
		{"sync without token", "/members/" + memberID + "/sync",
			func(string) url.Values { return nil }, http.StatusForbidden},
		{"sync with a wrong token", "/members/" + memberID + "/sync",
			func(string) url.Values { return url.Values{"csrf_token": {"guess"}} }, http.StatusForbidden},
		{"preview without token", "/members/" + memberID + "/preview",
			func(string) url.Values { return nil }, http.StatusForbidden},
		{"sync everyone without token", "/actions/sync-all",
			func(string) url.Values { return nil }, http.StatusForbidden},
		{"preview everyone without token", "/actions/preview-all",
			func(string) url.Values { return nil }, http.StatusForbidden},
		{"sync with the token", "/members/" + memberID + "/sync",
			func(real string) url.Values { return url.Values{"csrf_token": {real}} }, http.StatusSeeOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := sampleStatus()
			b := devBridge(t, st, nil)
			p := b.post(tt.path, tt.token(b.csrf()))
			if p.Status != tt.want {
				t.Fatalf("status %d, want %d; body:\n%s", p.Status, tt.want, p.Body)
			}
			syncs, passes := st.calls()
			if tt.want == http.StatusForbidden && (len(syncs) > 0 || passes > 0) {
				t.Errorf("a refused POST reached the bridge: syncs %v, passes %d", syncs, passes)
			}
			if tt.want == http.StatusSeeOther && len(syncs) != 1 {
				t.Errorf("an accepted POST ran %d syncs, want 1", len(syncs))
			}
		})
	}
}

func TestActions_CSRFTokenIsPerSession(t *testing.T) {
	st := sampleStatus()
	b := devBridge(t, st, nil)
	other := &bridge{t: t, srv: b.srv, client: &http.Client{Jar: newJar(t),
		CheckRedirect: b.client.CheckRedirect}}
	token := other.csrf()
	if p := b.post("/actions/sync-all", url.Values{"csrf_token": {token}}); p.Status != http.StatusForbidden {
		t.Errorf("another session's token: status %d, want 403", p.Status)
	}
	if _, passes := st.calls(); passes != 0 {
		t.Errorf("passes requested: %d, want 0", passes)
	}
}

func TestActions_PreviewThenApply(t *testing.T) {
	st := sampleStatus()
	b := devBridge(t, st, nil)
	token := url.Values{"csrf_token": {b.csrf()}}

	p := b.post("/members/"+memberID+"/preview", token)
	if p.Status != http.StatusOK {
		t.Fatalf("preview: status %d", p.Status)
	}
	mustContain(t, "preview", p.Body, `id="member-preview"`, "join <strong>makerspace-admins</strong>",
		`action="/members/`+memberID+`/sync"`, `id="apply-button"`)

	p = b.post("/members/"+memberID+"/sync", token)
	if p.Status != http.StatusSeeOther || p.Header.Get("Location") != "/members/"+memberID {
		t.Fatalf("apply: status %d to %q, want 303 to the member", p.Status, p.Header.Get("Location"))
	}
	p = b.get("/members/" + memberID)
	mustContain(t, "member page after the sync", p.Body, `data-testid="flash" data-kind="ok"`,
		"Sync applied: 3 changes; joined makerspace-admins; left makerspace-editors.")
	if again := b.get("/members/" + memberID); strings.Contains(again.Body, "Sync applied") {
		t.Errorf("the flash showed twice")
	}

	p = b.post("/actions/preview-all", token)
	mustContain(t, "preview of everyone", p.Body, `id="pass-preview"`,
		`id="pass-preview-stale" data-testid="pass-preview-stale">1<`, `id="sync-all-apply"`,
		"999999999999999999")
	p = b.post("/actions/sync-all", token)
	if p.Status != http.StatusSeeOther || p.Header.Get("Location") != "/" {
		t.Errorf("sync everyone: status %d to %q, want 303 to /", p.Status, p.Header.Get("Location"))
	}
	mustContain(t, "health after the request", b.get("/").Body, "A full pass was requested")

	syncs, passes := st.calls()
	want := []syncCall{
		{DiscordID: memberID, Trigger: "admin_preview", DryRun: true},
		{DiscordID: memberID, Trigger: "admin:developer", DryRun: false},
	}
	if d := cmp.Diff(want, syncs); d != "" {
		t.Errorf("syncs (-want +got):\n%s", d)
	}
	if passes != 1 {
		t.Errorf("full passes requested: %d, want 1", passes)
	}
}

func TestActions_PreviewAllBusy(t *testing.T) {
	st := sampleStatus()
	st.pass, st.previewErr = nil, errors.New("a dry run of a full pass is already running")
	b := devBridge(t, st, nil)
	p := b.post("/actions/preview-all", url.Values{"csrf_token": {b.csrf()}})
	mustContain(t, "page", p.Body, "already running")
	if strings.Contains(p.Body, `id="sync-all-apply"`) {
		t.Errorf("a failed preview offers to apply")
	}
}

func TestActivity_FiltersAndPaging(t *testing.T) {
	tests := []struct {
		query     string
		want      reconcile.ChangeFilter
		status    int
		firstRow  string
		olderLink string
	}{
		{query: "", want: reconcile.ChangeFilter{Limit: 51}, status: 200,
			firstRow: `data-id="120"`, olderLink: `href="/activity?before=71"`},
		{query: "before=71", want: reconcile.ChangeFilter{Limit: 51, Before: 71}, status: 200,
			firstRow: `data-id="70"`, olderLink: `href="/activity?before=21"`},
		{query: "kind=group_add&discord_id=" + memberID + "&user_pk=10",
			want: reconcile.ChangeFilter{Limit: 51, Kind: reconcile.KindGroupAdd,
				DiscordID: memberID, UserPK: 10}, status: 200,
			firstRow:  `data-id="119"`,
			olderLink: `href="/activity?before=21&amp;discord_id=` + memberID + `&amp;kind=group_add&amp;user_pk=10"`},
		{query: "kind=drop_table", status: 400},
		{query: "discord_id=abc", status: 400},
		{query: "before=-1", status: 400},
		{query: "user_pk=x", status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			st := sampleStatus()
			b := devBridge(t, st, nil)
			p := b.get("/activity?" + tt.query)
			if p.Status != tt.status {
				t.Fatalf("status %d, want %d", p.Status, tt.status)
			}
			if tt.status != 200 {
				if len(st.filters) != 0 {
					t.Errorf("a bad filter reached the store: %+v", st.filters)
				}
				return
			}
			if d := cmp.Diff([]reconcile.ChangeFilter{tt.want}, st.filters); d != "" {
				t.Errorf("filters (-want +got):\n%s", d)
			}
			mustContain(t, "page", p.Body, tt.firstRow, tt.olderLink)
			if got := strings.Count(p.Body, `data-testid="activity-row"`); got != 50 {
				t.Errorf("rows: got %d, want 50", got)
			}
		})
	}
}

func TestActivity_LastPageHasNoOlderLink(t *testing.T) {
	st := sampleStatus()
	st.changes = changes(3)
	b := devBridge(t, st, nil)
	p := b.get("/activity")
	if strings.Contains(p.Body, `id="activity-older"`) {
		t.Errorf("the only page links an older one")
	}
	if got := strings.Count(p.Body, `data-testid="activity-row"`); got != 3 {
		t.Errorf("rows: got %d, want 3", got)
	}
}

func TestAppRole_FirstMatchWins(t *testing.T) {
	a := &admin{appRoles: []config.AppRole{
		{Name: "admin", Groups: []string{"makerspace-admins", "inventory-admins"}},
		{Name: "editor", Groups: []string{"makerspace-editors"}},
	}}
	tests := []struct {
		groups []string
		want   string
	}{
		{[]string{"inventory-admins"}, "admin"},
		{[]string{"makerspace-editors", "makerspace-admins"}, "admin"},
		{[]string{"makerspace-editors"}, "editor"},
		{[]string{"staff"}, "user"},
		{nil, "user"},
	}
	for _, tt := range tests {
		if got := a.appRole(tt.groups); got != tt.want {
			t.Errorf("appRole(%v) = %q, want %q", tt.groups, got, tt.want)
		}
	}
}

func TestMember_NoAppRolesWithoutConfig(t *testing.T) {
	b := devBridge(t, sampleStatus(), nil)
	p := b.get("/members/" + memberID)
	if strings.Contains(p.Body, `data-testid="app-role"`) {
		t.Errorf("app role shown although BRIDGE_APP_ROLES is not set")
	}
	mustContain(t, "page", p.Body, `data-testid="claim-after"`)
}

// TestMapping_UnknownRolesApartFromRefused pins that a managed group whose role the guild
// lacks is listed as managed and under the missing roles, never among the refused entries.
func TestMapping_UnknownRolesApartFromRefused(t *testing.T) {
	b := devBridge(t, sampleStatus(), nil)
	body := b.get("/mapping").Body
	section := func(id string) string {
		t.Helper()
		start := strings.Index(body, `<section class="card" id="`+id+`"`)
		if start < 0 {
			t.Fatalf("no section %s", id)
		}
		end := strings.Index(body[start:], "</section>")
		return body[start : start+end]
	}
	if refused := section("invalid"); strings.Contains(refused, "ghost-group") ||
		strings.Contains(refused, "999999999999999999") {
		t.Errorf("the refused entries list the managed ghost-group or its missing role")
	}
	mustContain(t, "unknown roles", section("unknown-roles"),
		`data-testid="unknown-role-row" data-role-id="999999999999999999"`, "ghost-group",
		"The groups stay managed")
	mustContain(t, "managed groups", section("managed"), `data-group="ghost-group"`)
}

func TestSearch_NamesAndUsers(t *testing.T) {
	st := sampleStatus()
	st.search = &SearchResult{DirectoryReady: true, AuthentikSearched: true, More: 4,
		Hits: []SearchHit{
			{Entry: reconcile.Entry{DiscordID: "700", Username: "helga_discord",
				UserPKs: []int32{20, 21}},
				Users: []LinkedUser{{PK: 20, Username: "helga.b"}, {PK: 21}}},
			{Entry: reconcile.Entry{DiscordID: "701", UserPKs: []int32{22}},
				Users: []LinkedUser{{PK: 22, Username: "mateo.g"}}},
			{Entry: reconcile.Entry{DiscordID: "702", InGuild: true}},
		}}
	b := devBridge(t, st, nil)
	p := b.get("/members?q=a")
	mustContain(t, "results", p.Body,
		"3 of 7 accounts found",
		`data-testid="member-link">helga_discord<`,
		`data-user-pk="20">helga.b<`, `data-user-pk="21"><span class="muted">pk 21 (username`,
		// A former member is named by the Authentik user linked to it.
		`data-testid="member-link">mateo.g<`,
		`data-testid="member-link">Discord ID 702<`, "none linked")
	if strings.Contains(p.Body, ">pk 22") {
		t.Errorf("a row shows a pk although its username is known")
	}
}

func TestMember_FormerMemberNamedFromAuthentik(t *testing.T) {
	tests := []struct {
		name      string
		last      string // LastUsername
		wantTitle string
		wants     []string
	}{
		{name: "names recorded", last: "helga_discord", wantTitle: "helga.b",
			wants: []string{"Last known Discord name: <strong>Helga Brandt @helga_discord",
				`<strong id="member-name">Helga Brandt<`}},
		{name: "names never recorded", wantTitle: "helga.b",
			wants: []string{"the bridge never saw this account in the guild",
				`<strong id="member-name">helga.b<`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := sampleStatus()
			st.member = &MemberView{DiscordID: memberID, State: "absent",
				LastUsername: tt.last,
				Plan: &reconcile.Plan{DiscordID: memberID,
					Membership: guild.Membership{State: guild.StateAbsent},
					Users:      []reconcile.UserPlan{{PK: 39, Username: "helga.b"}}},
				Users: []MemberUser{{PK: 39, Username: "helga.b", Name: "Helga Brandt"}}}
			if tt.last != "" {
				st.member.LastDisplayName = "Helga Brandt"
			}
			st.outcome = &reconcile.Outcome{Plan: st.member.Plan, Result: reconcile.ResultPlanned}
			b := devBridge(t, st, nil)

			p := b.get("/members/" + memberID)
			mustContain(t, "member page", p.Body, append(tt.wants,
				"<title>"+tt.wantTitle+" · Discord bridge</title>",
				`id="member-ak-users"`,
				`<strong>helga.b</strong> <span class="muted">(Helga Brandt)`,
				"not in the guild")...)
			p = b.post("/members/"+memberID+"/preview", url.Values{"csrf_token": {b.csrf()}})
			mustContain(t, "dry run", p.Body,
				"<title>Preview sync of "+tt.wantTitle+" · Discord bridge</title>")
		})
	}
}

func TestMember_NotLinked(t *testing.T) {
	st := sampleStatus()
	plan := &reconcile.Plan{DiscordID: memberID, NoUser: true,
		Membership: guild.Membership{State: guild.StateMember,
			Member: &discordgo.Member{User: &discordgo.User{ID: memberID, Username: "elif.y"}}}}
	st.member = &MemberView{DiscordID: memberID, State: "member", Username: "elif.y",
		Plan: plan}
	st.outcome = &reconcile.Outcome{Plan: plan, Result: reconcile.ResultPlanned}
	b := devBridge(t, st, nil)

	p := b.get("/members/" + memberID)
	mustContain(t, "member page", p.Body, `data-differs="not-linked"`, "not linked",
		`id="preview-button" data-testid="preview-button" disabled`, `id="sync-unavailable"`)
	for _, bad := range []string{"in sync", "Authentik matches", `action="/members/` + memberID +
		`/preview"`} {
		if strings.Contains(p.Body, bad) {
			t.Errorf("the page of an unlinked member shows %q", bad)
		}
	}

	p = b.post("/members/"+memberID+"/preview", url.Values{"csrf_token": {b.csrf()}})
	mustContain(t, "dry run", p.Body, "<title>Preview sync of elif.y · Discord bridge</title>",
		`id="sync-unavailable"`)
	if strings.Contains(p.Body, `id="apply-button"`) {
		t.Errorf("the dry run of an unlinked member offers to apply it")
	}
}

// TestDevMode_RefusesForeignHostNames: with login off, a request that names another host
// (a page that rebound its own name to 127.0.0.1) is refused, for reads and actions alike.
func TestDevMode_RefusesForeignHostNames(t *testing.T) {
	b := devBridge(t, &fakeStatus{}, nil)
	for _, tc := range []struct {
		method, path, host string
		want               int
	}{
		{http.MethodGet, "/", "evil.example:8080", http.StatusMisdirectedRequest},
		{http.MethodPost, "/actions/sync-all", "evil.example", http.StatusMisdirectedRequest},
		{http.MethodGet, "/", "localhost:8080", http.StatusOK},
		{http.MethodGet, "/", "[::1]:8080", http.StatusOK},
	} {
		t.Run(tc.method+" "+tc.host, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, b.srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			resp, err := b.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
