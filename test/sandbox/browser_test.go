package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/domdebugger"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// screenshotsEnv names the directory, relative to the repository's root unless absolute, that
// TestBrowser saves its screenshots of the status page to. Unset (as in CI) saves none, so
// that a test run never rewrites the tracked docs/screenshots.
const screenshotsEnv = "BRIDGE_SCREENSHOTS"

const (
	// stepTimeout bounds one browser step: a navigation, or a click and the page it loads.
	stepTimeout = 20 * time.Second
	// settleTimeout bounds a wait for the bridge to reach a state (its first full pass, an
	// avatar hosted), polled by reloading the page.
	settleTimeout = 30 * time.Second
	// desktopWidth and phoneWidth are the viewport widths the page is looked at with.
	desktopWidth = 1280
	phoneWidth   = 390
)

// TestBrowser is the status page's real-browser test: Debian's chromium, driven headless
// through the DevTools protocol, against the sandbox's bridge and stand-ins. It walks what an
// admin does (OIDC login, mapping, search, a member's page, dry run and sync, the audit log,
// health) and checks that a non-admin is refused and that the page works without JavaScript.
func TestBrowser(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium on PATH: install Debian's chromium (`make tools` does, as root) " +
			"to run the status page's browser test")
	}
	shots := screenshotDir(t)

	sb, err := Start(t.Context(), Options{Validate: true, Resync: time.Hour})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := sb.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Cleanup(func() {
		for _, v := range sb.Authentik.Violations() {
			t.Errorf("authentik schema violation: %s", v)
		}
		if t.Failed() {
			t.Logf("bridge log ends:\n%s", sb.LogTail())
		}
	})

	admin := newBrowser(t, chrome)
	loggedIn := t.Run("admin logs in through OIDC", func(t *testing.T) {
		login(t, admin, sb, sb.Admin)
		if got := text(t, admin, "#current-user"); got != sb.Admin.Username {
			t.Errorf("#current-user = %q, want %q", got, sb.Admin.Username)
		}
	})
	if !loggedIn {
		t.FailNow() // every other step needs the admin's session
	}

	m := pickMember(t, sb)
	var counts mappingCounts
	t.Run("health", func(t *testing.T) { counts = checkHealth(t, admin, sb, shots) })
	t.Run("mapping", func(t *testing.T) { checkMapping(t, admin, sb, counts, shots) })
	t.Run("search and avatar", func(t *testing.T) { checkSearch(t, admin, sb, m, shots) })
	t.Run("former and unlinked members", func(t *testing.T) { checkOddMembers(t, admin, sb) })
	t.Run("dry run, sync and audit entry", func(t *testing.T) {
		checkSync(t, admin, sb, m, shots)
	})
	t.Run("without JavaScript", func(t *testing.T) { checkNoScript(t, admin, sb, m) })
	t.Run("phone width", func(t *testing.T) { checkPhone(t, admin, sb, m, shots) })
	t.Run("sync everyone", func(t *testing.T) { checkSyncAll(t, admin, sb, m, shots) })
	t.Run("logout", func(t *testing.T) {
		status := follow(t, admin, "#logout-button")
		if status != 200 || !exists(t, admin, "#logged-out") || exists(t, admin, "#current-user") {
			t.Errorf("after Sign out: status %d, #logged-out %v, #current-user %v; want the "+
				"signed-out page", status, exists(t, admin, "#logged-out"),
				exists(t, admin, "#current-user"))
		}
	})

	t.Run("non-admin is refused", func(t *testing.T) {
		// A browser of its own: the stand-in's session cookie would log the admin in again.
		br := newBrowser(t, chrome)
		login(t, br, sb, sb.Member)
		status := attr(t, br, "#forbidden", "data-status")
		if status != "403" {
			t.Errorf("#forbidden data-status = %q, want 403", status)
		}
		if exists(t, br, "#nav-mapping") || exists(t, br, "#mapping-table") {
			t.Errorf("the refusal page shows the navigation or the mapping")
		}
		// The bridge sends the refused user through the provider again, which signs them
		// in at once and lands on the refusal.
		resp := result(t, br, chromedp.NavigateResponse(sb.URL+"/members?q="+sb.Admin.Username))
		if resp.Status != 403 || !exists(t, br, "#forbidden") || exists(t, br, "#search-results") {
			t.Errorf("GET /members as %s: status %d; want 403, #forbidden and no results",
				sb.Member.Username, resp.Status)
		}
		shoot(t, br, shots, "forbidden", true)

		// Signing out there ends the provider's session too, so the admin can sign in on
		// this browser instead of being signed in as the member again at once.
		if status := follow(t, br, "#switch-account"); status != 200 {
			t.Fatalf("Sign out to use another account: status %d at %s", status,
				location(t, br))
		}
		if got := attr(t, br, "#logged-out", "data-authentik"); got != "ended" {
			t.Errorf("after the switch: #logged-out data-authentik = %q, want ended", got)
		}
		login(t, br, sb, sb.Admin)
		if got := text(t, br, "#current-user"); got != sb.Admin.Username {
			t.Errorf("after switching account: #current-user = %q, want %s", got,
				sb.Admin.Username)
		}
	})
}

// mappingCounts are the mapping's numbers as the health page gives them.
type mappingCounts struct {
	Managed, Unknown, Invalid string
}

// checkHealth waits for the gateway session and the first full pass, looks at the health
// page and returns its counts of the mapping.
func checkHealth(t *testing.T, br context.Context, sb *Sandbox, shots string) mappingCounts {
	poll(t, br, sb.URL+"/", "gateway ready and a full pass done", `(() => {
		const g = document.querySelector('#gateway-state');
		const p = document.querySelector('#pass-status');
		return !!g && ['ready', 'resumed'].includes(g.textContent.trim()) &&
			!!p && p.textContent.includes('finished') && !!document.querySelector('#pass-stale');
	})()`)
	if got := attr(t, br, "#nav-health", "aria-current"); got != "page" {
		t.Errorf("#nav-health aria-current = %q, want page", got)
	}
	if depth := text(t, br, "#queue-depth"); strings.Trim(depth, "0123456789") != "" ||
		depth == "" {
		t.Errorf("#queue-depth = %q, want a count", depth)
	}
	if got := text(t, br, "#authentik-state"); got != "reachable" {
		t.Errorf("#authentik-state = %q, want reachable", got)
	}
	checkWords(t, br, "dl.kv dd")
	checkCardsFit(t, br)
	counts := mappingCounts{
		Managed: attr(t, br, "#health-mapping", "data-managed"),
		Unknown: attr(t, br, "#health-mapping", "data-unknown-roles"),
		Invalid: attr(t, br, "#health-mapping", "data-invalid"),
	}
	shoot(t, br, shots, "health", true)

	// Whether the newest pass found users out of date depends on what the one before it
	// did; checkSyncAll makes sure of a pass that applies something.
	if attr(t, br, "#pass-stale", "data-stale") == "0" {
		return counts
	}
	changes := attr(t, br, "#pass-changes", "data-changes")
	if got := text(t, br, "#pass-changes"); !strings.Contains(got, "synced by the pass: "+
		changes+" change") {
		t.Errorf("#pass-changes = %q, want it to say what the pass applied", got)
	}
	logged := 0
	open(t, br, sb.URL+"/activity")
	for {
		for _, r := range eval[[]activityRow](t, br, activityJS) {
			if strings.HasPrefix(r.Trigger, "full_pass:") {
				logged++
			}
		}
		if !exists(t, br, "#activity-older") {
			break
		}
		follow(t, br, "#activity-older")
	}
	if n, err := strconv.Atoi(changes); err != nil || n > logged {
		t.Errorf("health says the pass applied %q changes; the audit log holds %d entries "+
			"of full passes", changes, logged)
	}
	return counts
}

// brokenWordsJS lists the words inside the elements sel matches that wrap in their middle.
// Hyphens, dashes and punctuation are fair places to wrap, so they separate words here.
const brokenWordsJS = `((sel) => {
	const out = [];
	for (const el of document.querySelectorAll(sel)) {
		const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
		for (let n = walk.nextNode(); n; n = walk.nextNode()) {
			for (const m of n.data.matchAll(/[^\s\-–—,;()]+/g)) {
				const r = document.createRange();
				r.setStart(n, m.index);
				r.setEnd(n, m.index + m[0].length);
				const lines = new Set([...r.getClientRects()].filter(x => x.width > 0)
					.map(x => Math.round(x.top)));
				if (lines.size > 1) out.push(m[0]);
			}
		}
	}
	return out;
})`

// checkWords fails the test for words that wrap in their middle inside the elements sel
// matches: at the desktop width every word fits a line of its own.
func checkWords(t *testing.T, br context.Context, sel string) {
	t.Helper()
	if broken := eval[[]string](t, br, brokenWordsJS+fmt.Sprintf("(%q)", sel)); len(broken) > 0 {
		t.Errorf("%s at %s: words wrapped in the middle: %q", sel, location(t, br), broken)
	}
}

// cardsFitJS describes the cards of the page's grids and the role chips of every card outside
// tables: how much room is left under a card's content, how wide the card is next to its
// grid, and how far a chip sticks out of its card.
const cardsFitJS = `(() => {
	const px = v => parseFloat(v) || 0;
	const cards = [...document.querySelectorAll('main .grid > .card')].map(c => {
		const cs = getComputedStyle(c), box = c.getBoundingClientRect();
		const last = c.lastElementChild;
		const slack = last ? box.bottom - px(cs.paddingBottom) - px(cs.borderBottomWidth) -
			last.getBoundingClientRect().bottom - px(getComputedStyle(last).marginBottom) : 0;
		return {id: c.id || c.querySelector('h2')?.textContent || '', slack: Math.round(slack),
			share: box.width / c.parentElement.getBoundingClientRect().width};
	});
	// A chip in a table may scroll with the table inside its frame.
	const chips = [...document.querySelectorAll('.card [data-testid=role]')]
		.filter(r => !r.closest('.table-wrap')).map(r => {
		const card = r.closest('.card'), cs = getComputedStyle(card);
		const over = r.getBoundingClientRect().right -
			(card.getBoundingClientRect().right - px(cs.paddingRight) - px(cs.borderRightWidth));
		return {id: r.dataset.roleId, over: Math.round(over)};
	});
	return {cards, chips};
})()`

type cardsFit struct {
	Cards []struct {
		ID    string  `json:"id"`
		Slack int     `json:"slack"`
		Share float64 `json:"share"`
	} `json:"cards"`
	Chips []struct {
		ID   string `json:"id"`
		Over int    `json:"over"`
	} `json:"chips"`
}

// checkCardsFit fails the test for a card stretched far below its content, for a card of a
// grid row that leaves most of the row empty, and for a role chip that sticks out of its card.
func checkCardsFit(t *testing.T, br context.Context) {
	t.Helper()
	fit := eval[cardsFit](t, br, cardsFitJS)
	row := 0.0
	for _, c := range fit.Cards {
		if c.Slack > 24 {
			t.Errorf("%s: card %q has %d px of nothing under its content", location(t, br),
				c.ID, c.Slack)
		}
		row += c.Share
	}
	// Cards as narrow as a quarter of the page, with a row of two using half of it, read
	// badly: a grid of at most three cards must fill its row.
	if n := len(fit.Cards); n > 0 && n <= 3 && row < 0.9 {
		t.Errorf("%s: the %d cards of a grid use %.0f%% of its width, want the whole row",
			location(t, br), n, row*100)
	}
	for _, c := range fit.Chips {
		if c.Over > 0 {
			t.Errorf("%s: role chip %s sticks %d px out of its card", location(t, br), c.ID,
				c.Over)
		}
	}
}

// mappingPage is what the mapping page shows, read by mappingJS.
type mappingPage struct {
	Managed []managedRow `json:"managed"`
	Invalid []struct {
		Group  string `json:"group"`
		Reason string `json:"reason"`
	} `json:"invalid"`
	Unknown []unknownRow `json:"unknown"`
	Unused  []pageRole   `json:"unused"`
}

// unknownRow is a mapping to a role the guild does not have.
type unknownRow struct {
	RoleID string `json:"roleID"`
	Text   string `json:"text"`
}

// managedRow is a managed group. Missing holds the IDs of its roles the guild lacks,
// separated by spaces; Badge says the row is marked for them.
type managedRow struct {
	Group   string     `json:"group"`
	Roles   []pageRole `json:"roles"`
	Missing string     `json:"missing"`
	Badge   bool       `json:"badge"`
}

type pageRole struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Color string `json:"color"`
}

const mappingJS = `(() => {
	const roles = el => [...el.querySelectorAll('[data-testid=role]')].map(r => ({
		id: r.dataset.roleId,
		name: r.querySelector('.role-name').textContent.trim(),
		color: r.querySelector('circle').getAttribute('fill'),
	}));
	const all = sel => [...document.querySelectorAll(sel)];
	return {
		managed: all('#mapping-table [data-testid=mapping-row]').map(r => ({
			group: r.dataset.group, roles: roles(r), missing: r.dataset.missing || '',
			badge: !!r.querySelector('[data-testid=missing-role-badge]')})),
		invalid: all('#invalid-mappings [data-testid=invalid-row]').map(r => ({
			group: r.dataset.group, reason: r.cells[1].textContent})),
		unknown: all('#unknown-role-table [data-testid=unknown-role-row]').map(r => ({
			roleID: r.dataset.roleId, text: r.textContent})),
		unused: roles(document.querySelector('#unused-roles') || document.createElement('p')),
	};
})()`

// checkMapping compares the mapping page with the groups and roles the sandbox seeded: every
// valid discord_role_id (string, number or list) is a managed group with its roles resolved;
// one naming a role the guild lacks is still managed, marked, and listed under the missing
// roles; every refused one is listed with its reason. Its counts must be the health page's.
func checkMapping(t *testing.T, br context.Context, sb *Sandbox, counts mappingCounts,
	shots string) {
	open(t, br, sb.URL+"/")
	follow(t, br, "#nav-mapping")
	poll(t, br, sb.URL+"/mapping", "roles read from Discord",
		`!!document.querySelector('#unused-roles [data-testid=role]')`)
	got := eval[mappingPage](t, br, mappingJS)

	roleByID := map[string]Role{}
	for _, r := range sb.Guild.Roles {
		roleByID[r.ID] = r
	}
	used := map[string]bool{}
	managed := map[string][]pageRole{}
	rows := map[string]managedRow{}
	for _, row := range got.Managed {
		managed[row.Group] = row.Roles
		rows[row.Group] = row
	}
	invalid := map[string]string{}
	for _, row := range got.Invalid {
		invalid[row.Group] = row.Reason
	}

	for _, g := range sb.Guild.Groups {
		if g.Mapping == "" {
			if _, ok := managed[g.Name]; ok {
				t.Errorf("group %s has no discord_role_id but is listed as managed", g.Name)
			}
			continue
		}
		var ids []string
		for _, r := range sb.Guild.Roles {
			if strings.Contains(g.Mapping, r.ID) {
				ids = append(ids, r.ID)
			}
		}
		switch {
		case g.Problem == "":
			for _, id := range ids {
				used[id] = true
			}
			checkManagedRow(t, g, ids, managed, roleByID)
		case len(ids) == 0:
			// The mapping names a role the guild does not have: the group is managed (and
			// loses the members the role fed), marked as such, and not refused.
			i := slices.IndexFunc(got.Unknown, func(u unknownRow) bool {
				return strings.Contains(g.Mapping, u.RoleID)
			})
			if i < 0 || !strings.Contains(got.Unknown[i].Text, g.Name) {
				t.Errorf("group %s (discord_role_id %s, %s): no unknown-role row naming it; "+
					"unknown rows: %+v", g.Name, g.Mapping, g.Problem, got.Unknown)
			}
			row, ok := rows[g.Name]
			if !ok || !row.Badge || row.Missing == "" || !strings.Contains(g.Mapping, row.Missing) {
				t.Errorf("group %s (discord_role_id %s): managed row %+v (found %v), want it "+
					"managed with a missing-role badge", g.Name, g.Mapping, row, ok)
			}
			if _, ok := invalid[g.Name]; ok {
				t.Errorf("group %s is managed but also among the refused entries", g.Name)
			}
		default:
			reason, ok := invalid[g.Name]
			if !ok {
				t.Errorf("group %s (%s) is not among the refused entries %q", g.Name,
					g.Problem, slices.Sorted(maps.Keys(invalid)))
				continue
			}
			if _, ok := managed[g.Name]; ok {
				t.Errorf("group %s is refused and managed at once", g.Name)
			}
			if word := problemWord(g.Problem); !strings.Contains(reason, word) {
				t.Errorf("group %s: reason %q does not say %q (seeded problem: %s)", g.Name,
					reason, word, g.Problem)
			}
		}
	}

	var gotUnused, wantUnused []string
	for _, r := range got.Unused {
		if r.ID != sb.Guild.ID { // @everyone, whose ID is the guild's
			gotUnused = append(gotUnused, r.ID)
		}
	}
	for _, r := range sb.Guild.Roles {
		if !used[r.ID] {
			wantUnused = append(wantUnused, r.ID)
		}
	}
	slices.Sort(gotUnused)
	slices.Sort(wantUnused)
	if !slices.Equal(gotUnused, wantUnused) {
		t.Errorf("unused roles = %q, want %q", gotUnused, wantUnused)
	}

	onPage := mappingCounts{Managed: fmt.Sprint(len(got.Managed)),
		Unknown: fmt.Sprint(len(got.Unknown)), Invalid: fmt.Sprint(len(got.Invalid))}
	if onPage != counts {
		t.Errorf("mapping page counts %+v, health page %+v; want the same", onPage, counts)
	}
	for _, sel := range []string{"#mapping-table", "#unknown-role-table", "#invalid-mappings"} {
		checkWords(t, br, sel+" code, "+sel+" .mono")
	}
	checkCardsFit(t, br)
	shoot(t, br, shots, "mapping", true)
}

func checkManagedRow(t *testing.T, g Group, ids []string, managed map[string][]pageRole,
	roleByID map[string]Role,
) {
	t.Helper()
	roles, ok := managed[g.Name]
	if !ok {
		t.Errorf("group %s (discord_role_id %s) is not in #mapping-table", g.Name, g.Mapping)
		return
	}
	var gotIDs []string
	for _, r := range roles {
		gotIDs = append(gotIDs, r.ID)
		want := roleByID[r.ID]
		if r.Name != want.Name {
			t.Errorf("group %s: role %s shows as %q, want %q", g.Name, r.ID, r.Name, want.Name)
		}
		if wantColor := fmt.Sprintf("#%06x", want.Color); want.Color != 0 &&
			!strings.EqualFold(r.Color, wantColor) {
			t.Errorf("group %s: role %s has colour %s, want %s", g.Name, want.Name, r.Color,
				wantColor)
		}
	}
	slices.Sort(gotIDs)
	slices.Sort(ids)
	if !slices.Equal(gotIDs, ids) {
		t.Errorf("group %s (discord_role_id %s): roles %q, want %q", g.Name, g.Mapping, gotIDs,
			ids)
	}
}

// problemWord is the word a refusal's reason must contain for a seeded problem.
func problemWord(problem string) string {
	for _, w := range []string{"object", "superuser"} {
		if strings.Contains(problem, w) {
			return w
		}
	}
	return problem
}

// pickMember chooses the member the test searches for, looks at and syncs: linked, in the
// guild, with a real avatar, and none of the two logins (their groups must stay put).
func pickMember(t *testing.T, sb *Sandbox) Member {
	t.Helper()
	i := slices.IndexFunc(sb.Guild.Members, func(m Member) bool {
		return m.InGuild && !m.Pending && m.UserPK != 0 && m.Avatar == "image" &&
			m.Username != sb.Admin.Username && m.Username != sb.Member.Username &&
			strings.Contains(m.DisplayName, " ")
	})
	if i < 0 {
		t.Fatalf("the seeded guild has no linked member with an avatar and a full name")
	}
	return sb.Guild.Members[i]
}

// checkSearch finds m by the last word of their Discord name, opens their page from the
// results and checks that the hosted avatar loads at 64×64.
func checkSearch(t *testing.T, br context.Context, sb *Sandbox, m Member, shots string) {
	words := strings.Fields(m.DisplayName)
	q := words[len(words)-1]
	row := fmt.Sprintf(`#search-results [data-testid=search-row][data-discord-id="%s"]`,
		m.DiscordID)
	// Discord names are searchable once the first full pass has filled the directory.
	poll(t, br, sb.URL+"/members?q="+q, "search finds "+m.Username,
		fmt.Sprintf(`!!document.querySelector('%s')`, row))

	open(t, br, sb.URL+"/")
	follow(t, br, "#nav-members")
	do(t, br, chromedp.SendKeys(chromedp.ID("member-search"), q))
	follow(t, br, "#member-search-button")
	if !exists(t, br, row) {
		t.Fatalf("typed search for %q: no result row for %s (%s)", q, m.Username, m.DiscordID)
	}
	if got := text(t, br, row+" td:last-child"); !strings.Contains(got, m.Username) {
		t.Errorf("result row's Authentik users = %q, want %s", got, m.Username)
	}
	checkSearchOrder(t, br, sb, m)
	open(t, br, sb.URL+"/members?q="+q)
	shoot(t, br, shots, "members-search", true)

	follow(t, br, row+" [data-testid=member-link]")
	if got := attr(t, br, "#member-head", "data-discord-id"); got != m.DiscordID {
		t.Fatalf("member page of %s: data-discord-id %q", m.DiscordID, got)
	}
	// The avatar is hosted by the first full pass; reload until it is there and loaded.
	poll(t, br, sb.URL+"/members/"+m.DiscordID, "avatar of "+m.Username+" loaded at 64×64",
		`(() => {
			const img = document.querySelector('#member-avatar');
			return !!img && img.complete && img.naturalWidth === 64 && img.naturalHeight === 64;
		})()`)
	if src := attr(t, br, "#member-avatar", "src"); !strings.HasPrefix(src, sb.URL+"/") {
		t.Errorf("avatar src %q is not hosted by the bridge at %s", src, sb.URL)
	}
}

// searchRow is one result of a member search as the page shows it.
type searchRow struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Users string `json:"users"`
}

const searchJS = `[...document.querySelectorAll('#search-results [data-testid=search-row]')]
	.map(r => ({id: r.dataset.discordId,
		name: r.querySelector('[data-testid=member-link]').textContent.trim(),
		users: r.querySelector('[data-testid=hit-users]').textContent.trim()}))`

// checkSearchOrder searches by m's Discord ID, which Authentik's user search cannot match, so
// that the username must come from the bridge's lookup; and searches broadly, where results
// come in alphabetical order and every linked user shows by username.
func checkSearchOrder(t *testing.T, br context.Context, sb *Sandbox, m Member) {
	t.Helper()
	open(t, br, sb.URL+"/members?q="+m.DiscordID)
	rows := eval[[]searchRow](t, br, searchJS)
	if len(rows) == 0 || rows[0].ID != m.DiscordID || rows[0].Users != m.Username {
		t.Errorf("search for %s's ID: rows %+v, want %s first with Authentik user %s",
			m.Username, rows, m.DiscordID, m.Username)
	}

	open(t, br, sb.URL+"/members?q=a")
	rows = eval[[]searchRow](t, br, searchJS)
	if len(rows) < 5 {
		t.Fatalf("search for \"a\": %d rows, want most of the guild", len(rows))
	}
	if !slices.IsSortedFunc(rows, func(a, b searchRow) int {
		return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
	}) {
		t.Errorf("search for \"a\" is not in alphabetical order: %+v", rows)
	}
	for _, r := range rows {
		if strings.Contains(r.Users, "pk ") {
			t.Errorf("search row %s (%s) shows Authentik users as %q, want usernames", r.ID,
				r.Name, r.Users)
		}
	}

	// An exact username comes first, ahead of names that sort before it.
	open(t, br, sb.URL+"/members?q="+m.Username)
	if rows := eval[[]searchRow](t, br, searchJS); len(rows) == 0 || rows[0].ID != m.DiscordID {
		t.Errorf("search for %s: rows %+v, want the exact match first", m.Username, rows)
	}
}

// checkOddMembers looks at a former member, known now only through the Authentik user still
// linked to them, and at a member no Authentik user is linked to.
func checkOddMembers(t *testing.T, br context.Context, sb *Sandbox) {
	i := slices.IndexFunc(sb.Guild.Members, func(m Member) bool {
		return !m.InGuild && m.UserPK != 0
	})
	j := slices.IndexFunc(sb.Guild.Members, func(m Member) bool {
		return m.InGuild && m.UserPK == 0 && len(m.Roles) > 0
	})
	if i < 0 || j < 0 {
		t.Fatalf("the seeded guild lacks a former member with a linked user or an unlinked member")
	}
	former, unlinked := sb.Guild.Members[i], sb.Guild.Members[j]

	// The seed gives a person the same username in Discord and Authentik.
	open(t, br, sb.URL+"/members?q="+former.Username)
	rows := eval[[]searchRow](t, br, searchJS)
	k := slices.IndexFunc(rows, func(r searchRow) bool { return r.ID == former.DiscordID })
	if k < 0 || rows[k].Name != former.Username {
		t.Errorf("search for %s: rows %+v, want %s named by its Authentik user", former.Username,
			rows, former.DiscordID)
	}
	open(t, br, sb.URL+"/members/"+former.DiscordID)
	if got := text(t, br, "#page-title"); got != former.Username {
		t.Errorf("former member's page title = %q, want the Authentik username %s", got,
			former.Username)
	}
	if got := text(t, br, "#member-ak-users"); !strings.Contains(got, former.Username) {
		t.Errorf("former member's Authentik users = %q, want %s", got, former.Username)
	}
	if !exists(t, br, "#member-last-name") {
		t.Errorf("former member's page does not say what it knows of the Discord name")
	}
	follow(t, br, "#preview-button")
	if got, want := text(t, br, "#page-title"), "Preview sync of "+former.Username; got != want {
		t.Errorf("former member's dry run title = %q, want %q", got, want)
	}

	open(t, br, sb.URL+"/members/"+unlinked.DiscordID)
	if got := attr(t, br, "#member-differs", "data-differs"); got != "not-linked" {
		t.Errorf("unlinked member: #member-differs data-differs = %q, want not-linked", got)
	}
	if got := text(t, br, "#member-differs"); strings.Contains(got, "in sync") ||
		strings.Contains(got, "Authentik matches") {
		t.Errorf("unlinked member: #member-differs = %q, want no claim of being in sync", got)
	}
	if !exists(t, br, "#preview-button[disabled]") || !exists(t, br, "#sync-unavailable") ||
		exists(t, br, `form[action$="/preview"]`) {
		t.Errorf("unlinked member: the sync action is offered, or disabled without a reason")
	}
}

// activityRow is one row of the audit log as the page shows it.
type activityRow struct {
	ID        int64  `json:"id"`
	Kind      string `json:"kind"`
	DiscordID string `json:"discordID"`
	Trigger   string `json:"trigger"`
	Text      string `json:"text"`
}

const activityJS = `[...document.querySelectorAll('#activity-table [data-testid=activity-row]')]
	.map(r => ({id: Number(r.dataset.id), kind: r.dataset.kind, discordID: r.dataset.discordId,
		trigger: r.cells[1].textContent.trim(), text: r.textContent}))`

// checkSync makes m out of date behind the bridge's back, then does what an admin would: see
// that Authentik differs, look at the dry run, apply it and find the change in the audit log.
func checkSync(t *testing.T, br context.Context, sb *Sandbox, m Member, shots string) {
	page := sb.URL + "/members/" + m.DiscordID
	poll(t, br, page, m.Username+" in sync after the first full pass",
		`document.querySelector('#member-differs')?.dataset.differs === 'false'`)

	open(t, br, sb.URL+"/activity")
	before := eval[[]activityRow](t, br, activityJS)
	var lastID int64
	for _, r := range before {
		lastID = max(lastID, r.ID)
	}

	change, err := sb.MakeStale(m.DiscordID)
	if err != nil {
		t.Fatalf("MakeStale(%s): %v", m.Username, err)
	}
	role := staleRole(t, sb, change)
	fed := managedGroupsOf(sb, role)
	if len(fed) != 1 {
		t.Fatalf("%s feeds the groups %q; the test expects exactly one", role, fed)
	}
	group := fed[0]
	open(t, br, page)
	if got := attr(t, br, "#member-differs", "data-differs"); got != "true" {
		t.Fatalf("after %q: #member-differs data-differs = %q, want true", change, got)
	}

	// The downstream preview: the managed groups in the claim are exactly what the roles
	// call for, the others (e.g. newsletter) stay, and the app role follows from them.
	wantGroups := managedGroupsOf(sb, append(slices.Clone(m.Roles), role)...)
	managed := managedGroupsOf(sb, roleNames(sb)...)
	claim := strings.Split(text(t, br, "#downstream [data-testid=claim-after]"), ", ")
	got := slices.DeleteFunc(slices.Clone(claim), func(g string) bool {
		return !slices.Contains(managed, g)
	})
	slices.Sort(got)
	if !slices.Equal(got, wantGroups) {
		t.Errorf("downstream claim after the sync %q has the managed groups %q, want %q",
			claim, got, wantGroups)
	}
	if got, want := attr(t, br, "#downstream [data-testid=app-role]", "data-role"),
		appRoleOf(wantGroups); got != want {
		t.Errorf("downstream app role = %q, want %q", got, want)
	}
	if got := text(t, br, "#page-title"); got != m.Username {
		t.Errorf("member page title = %q, want %s", got, m.Username)
	}
	checkWords(t, br, "dl.kv dd, #member-head")
	checkCardsFit(t, br)
	shoot(t, br, shots, "member", true)

	follow(t, br, "#preview-button")
	if got, want := text(t, br, "#page-title"), "Preview sync of "+m.Username; got != want {
		t.Errorf("dry run title = %q, want %q, named as the member page is", got, want)
	}
	plan := text(t, br, "#member-preview [data-testid=plan-changes]")
	if !strings.Contains(plan, "join "+group) {
		t.Errorf("dry run after %q = %q, want it to join %s", change, plan, group)
	}
	shoot(t, br, shots, "member-dry-run", true)

	follow(t, br, "#apply-button")
	flash := text(t, br, "[data-testid=flash][data-kind=ok]")
	if !strings.Contains(flash, group) {
		t.Errorf("flash after the sync = %q, want it to name %s", flash, group)
	}
	if got := attr(t, br, "#member-differs", "data-differs"); got != "false" {
		t.Errorf("after the sync: #member-differs data-differs = %q, want false", got)
	}

	open(t, br, sb.URL+"/")
	follow(t, br, "#nav-activity")
	rows := eval[[]activityRow](t, br, activityJS)
	if len(rows) == 0 || rows[0].ID <= lastID {
		t.Fatalf("activity after the sync: no entry newer than %d: %+v", lastID, rows)
	}
	trigger := "admin:" + sb.Admin.Username
	joined := false
	for _, r := range rows {
		if r.ID <= lastID {
			break
		}
		if r.DiscordID != m.DiscordID || r.Trigger != trigger {
			t.Errorf("new audit entry %d is of %s by %q, want %s by %q", r.ID, r.DiscordID,
				r.Trigger, m.DiscordID, trigger)
		}
		joined = joined || r.Kind == "group_add" && strings.Contains(r.Text, group)
	}
	if !joined {
		t.Errorf("no new group_add entry naming %s; newest row: %+v", group, rows[0])
	}
	shoot(t, br, shots, "activity", false)
	checkActivityPaging(t, br, sb, rows)
}

// checkActivityPaging follows the link to older entries, when the log has more than a page,
// and uses the filter by Discord ID.
func checkActivityPaging(t *testing.T, br context.Context, sb *Sandbox, first []activityRow) {
	t.Helper()
	if exists(t, br, "#activity-older") {
		follow(t, br, "#activity-older")
		older := eval[[]activityRow](t, br, activityJS)
		oldest := first[len(first)-1].ID
		if len(older) == 0 || slices.ContainsFunc(older, func(r activityRow) bool {
			return r.ID >= oldest
		}) {
			t.Errorf("older page has %d rows, want some, all older than entry %d", len(older),
				oldest)
		}
	}

	id := first[0].DiscordID
	open(t, br, sb.URL+"/activity?discord_id="+id)
	rows := eval[[]activityRow](t, br, activityJS)
	if len(rows) == 0 || slices.ContainsFunc(rows, func(r activityRow) bool {
		return r.DiscordID != id
	}) {
		t.Errorf("activity filtered by discord_id %s: %d rows, want some and only its own: %+v",
			id, len(rows), rows)
	}
}

// staleRole reads the role out of MakeStale's description, "@name got Role".
func staleRole(t *testing.T, sb *Sandbox, change string) string {
	t.Helper()
	_, name, ok := strings.Cut(change, " got ")
	if !ok || !slices.ContainsFunc(sb.Guild.Roles, func(r Role) bool { return r.Name == name }) {
		t.Fatalf("MakeStale said %q; want \"@name got <role>\"", change)
	}
	return name
}

// managedGroupsOf returns, sorted, the groups that the valid mappings of the named roles feed.
func managedGroupsOf(sb *Sandbox, roleNames ...string) []string {
	var out []string
	for _, r := range sb.Guild.Roles {
		if !slices.Contains(roleNames, r.Name) {
			continue
		}
		for _, g := range sb.Guild.Groups {
			if g.Problem == "" && g.Mapping != "" && strings.Contains(g.Mapping, r.ID) {
				out = append(out, g.Name)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func roleNames(sb *Sandbox) []string {
	var out []string
	for _, r := range sb.Guild.Roles {
		out = append(out, r.Name)
	}
	return out
}

// appRoleOf is the app role BRIDGE_APP_ROLES (appRoles) gives a groups claim: the first
// entry one of whose groups is in the claim, else "user".
func appRoleOf(claim []string) string {
	for entry := range strings.SplitSeq(appRoles, ";") {
		name, groups, _ := strings.Cut(entry, "=")
		for g := range strings.SplitSeq(groups, ",") {
			if slices.Contains(claim, g) {
				return name
			}
		}
	}
	return "user"
}

// checkNoScript searches and opens a member's page in a tab with JavaScript turned off: the
// page's forms and links must work by themselves.
func checkNoScript(t *testing.T, br context.Context, sb *Sandbox, m Member) {
	if !scriptsRun(t, br) {
		t.Fatalf("app.js's submit listener is missing with JavaScript on; the check below " +
			"cannot tell whether scripts run")
	}
	tab, cancel := chromedp.NewContext(br) // a tab of the same browser, signed in
	t.Cleanup(cancel)
	// The first action opens the tab and ties it to its context, so it gets no step timeout.
	if err := chromedp.Do(tab, chromedp.EmulateViewport(desktopWidth, 900)); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	ctx, cancelStep := context.WithTimeout(tab, stepTimeout)
	defer cancelStep()
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled,
		emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatalf("turn JavaScript off: %v", err)
	}

	open(t, tab, sb.URL+"/members")
	do(t, tab, chromedp.SendKeys(chromedp.ID("member-search"), m.Username))
	follow(t, tab, "#member-search-button")
	link := fmt.Sprintf(`#search-results [data-testid=search-row][data-discord-id="%s"] `+
		`[data-testid=member-link]`, m.DiscordID)
	if !exists(t, tab, link) {
		t.Fatalf("search for %s without JavaScript: no link to %s", m.Username, m.DiscordID)
	}
	follow(t, tab, link)
	if got := attr(t, tab, "#member-head", "data-discord-id"); got != m.DiscordID {
		t.Fatalf("member page without JavaScript: data-discord-id %q, want %s", got,
			m.DiscordID)
	}
	follow(t, tab, "#preview-button")
	if !exists(t, tab, "#apply-button") {
		t.Errorf("dry run without JavaScript: no #apply-button")
	}
	if scriptsRun(t, tab) {
		t.Errorf("the page's own scripts run although JavaScript is off")
	}
}

// scriptsRun reports whether the page's own script runs: app.js listens for the document's
// submit events, a listener only a running script can have added. (The DevTools protocol's
// evaluation, which the test uses to read the page, works either way.)
func scriptsRun(t *testing.T, br context.Context) bool {
	t.Helper()
	doc := result(t, br, chromedp.Evaluate[*runtime.RemoteObject](`document`))
	ctx, cancel := context.WithTimeout(br, stepTimeout)
	defer cancel()
	res, err := chromedp.Call(ctx, domdebugger.GetEventListeners,
		domdebugger.GetEventListenersParams{ObjectID: doc.ObjectID})
	if err != nil {
		t.Fatalf("event listeners of the document: %v", err)
	}
	return slices.ContainsFunc(res.Listeners, func(l *domdebugger.EventListener) bool {
		return l.Type == "submit"
	})
}

// checkPhone looks at the pages 390 px wide: a wide table may scroll inside its frame, but
// the page itself must not scroll sideways.
func checkPhone(t *testing.T, br context.Context, sb *Sandbox, m Member, shots string) {
	do(t, br, chromedp.EmulateViewport(phoneWidth, 844, chromedp.EmulateMobile))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(br, stepTimeout)
		defer cancel()
		_ = chromedp.Do(ctx, chromedp.EmulateViewport(desktopWidth, 900))
	})
	for i, path := range []string{"/members/" + m.DiscordID, "/mapping", "/", "/activity"} {
		open(t, br, sb.URL+path)
		if wide := eval[int](t, br, `document.documentElement.scrollWidth`); wide > phoneWidth {
			t.Errorf("%s at %d px: the page is %d px wide, want no sideways scrolling", path,
				phoneWidth, wide)
		}
		checkCardsFit(t, br)
		if i == 0 {
			shoot(t, br, shots, "member-phone", true)
		}
	}
}

// checkSyncAll makes a member other than m out of date, previews a sync of everyone from the
// health page, requests it and waits for the health page to tell what the pass applied.
func checkSyncAll(t *testing.T, br context.Context, sb *Sandbox, m Member, shots string) {
	i := slices.IndexFunc(sb.Guild.Members, func(o Member) bool {
		return o.InGuild && !o.Pending && o.UserPK != 0 && o.DiscordID != m.DiscordID &&
			o.Username != sb.Admin.Username && o.Username != sb.Member.Username
	})
	if i < 0 {
		t.Fatalf("the seeded guild has no second linked member")
	}
	other := sb.Guild.Members[i]
	if _, err := sb.MakeStale(other.DiscordID); err != nil {
		t.Fatalf("MakeStale(%s): %v", other.Username, err)
	}

	open(t, br, sb.URL+"/")
	follow(t, br, "#sync-all-preview")
	if !exists(t, br, "#pass-preview") {
		t.Fatalf("preview of a full pass: no #pass-preview")
	}
	shoot(t, br, shots, "sync-all-dry-run", true)
	follow(t, br, "#sync-all-apply")
	if !exists(t, br, "[data-testid=flash][data-kind=ok]") || !exists(t, br, "#gateway-state") {
		t.Errorf("after Run a full pass now: want the health page with a confirmation")
	}

	// The pass applies the stale member itself; the card counts what it applied.
	poll(t, br, sb.URL+"/", "the requested pass done", `(() => {
		const p = document.querySelector('#pass-status');
		return document.querySelector('#pass-trigger')?.textContent === 'full_pass:admin' &&
			!!p && p.textContent.includes('finished');
	})()`)
	stale := attr(t, br, "#pass-stale", "data-stale")
	changes := ""
	if exists(t, br, "#pass-changes") {
		changes = attr(t, br, "#pass-changes", "data-changes")
	}
	if n, err := strconv.Atoi(changes); stale == "0" || err != nil || n < 1 {
		t.Errorf("after the requested pass: %s users out of date, %q changes applied; want "+
			"1 or more of both (%s was out of date)", stale, changes, other.Username)
	}
}

// newBrowser starts a headless chromium with a profile of its own, so that no cookie is
// shared with another browser of the test, and returns the context of its first tab.
func newBrowser(t *testing.T, chrome string) context.Context {
	t.Helper()
	// Without the flags that stop Chromium's own background traffic (component updates,
	// sync, QUIC probes), its connections are refused on machines without internet access.
	alloc, cancelAlloc := chromedp.NewExecAllocator(t.Context(),
		chromedp.ExecPath(chrome),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true), // screenshots as wide as the window
		chromedp.UserDataDir(t.TempDir()),
	)
	t.Cleanup(cancelAlloc) // runs before TempDir's removal: the browser has exited by then
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	// The first action starts the browser and ties it to ctx, so it gets no step timeout.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(desktopWidth, 900)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// login opens the status page, which sends the browser to the stand-in's login form, signs
// in there and follows the redirects back.
func login(t *testing.T, br context.Context, sb *Sandbox, l Login) {
	t.Helper()
	open(t, br, sb.URL+"/")
	if loc := location(t, br); !strings.HasPrefix(loc, sb.Authentik.URL()) {
		t.Fatalf("GET / without a session went to %s, want the provider at %s", loc,
			sb.Authentik.URL())
	}
	do(t, br,
		chromedp.SendKeys(chromedp.ID("username"), l.Username),
		chromedp.SendKeys(chromedp.ID("password"), l.Password),
	)
	follow(t, br, "#login")
	if exists(t, br, "#error") && strings.HasPrefix(location(t, br), sb.Authentik.URL()) {
		t.Fatalf("login as %s refused: %s", l.Username, text(t, br, "#error"))
	}
	if loc := location(t, br); !strings.HasPrefix(loc, sb.URL+"/") {
		t.Fatalf("after login as %s the browser is at %s, want the bridge %s", l.Username, loc,
			sb.URL)
	}
}

func do(t *testing.T, br context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(br, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser at %s: %v", location(t, br), err)
	}
}

func result[T any](t *testing.T, br context.Context, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(br, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// open navigates to target and fails unless the page (after redirects) answers 200.
func open(t *testing.T, br context.Context, target string) {
	t.Helper()
	resp := result(t, br, chromedp.NavigateResponse(target))
	if resp.Status != 200 {
		t.Fatalf("GET %s: status %d at %s", target, resp.Status, resp.URL)
	}
}

// follow clicks the element sel, waits for the page it loads and returns its status.
func follow(t *testing.T, br context.Context, sel string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(br, stepTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("click %s at %s: %v", sel, location(t, br), err)
	}
	return resp.Status
}

func eval[T any](t *testing.T, br context.Context, js string) T {
	t.Helper()
	return result(t, br, chromedp.Evaluate[T](js))
}

func exists(t *testing.T, br context.Context, sel string) bool {
	t.Helper()
	return eval[bool](t, br, fmt.Sprintf("!!document.querySelector(%q)", sel))
}

// text is the trimmed text of the first element sel matches; the test fails without one.
func text(t *testing.T, br context.Context, sel string) string {
	t.Helper()
	v := eval[*string](t, br, fmt.Sprintf("document.querySelector(%q)?.textContent ?? null", sel))
	if v == nil {
		t.Fatalf("page %s has no %s", location(t, br), sel)
	}
	return strings.TrimSpace(*v)
}

// attr is an attribute of the first element sel matches; the test fails without one.
func attr(t *testing.T, br context.Context, sel, name string) string {
	t.Helper()
	v := eval[*string](t, br, fmt.Sprintf("document.querySelector(%q)?.getAttribute(%q) ?? "+
		"(document.querySelector(%[1]q) ? '' : null)", sel, name))
	if v == nil {
		t.Fatalf("page %s has no %s", location(t, br), sel)
	}
	return *v
}

func location(t *testing.T, br context.Context) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(br, stepTimeout)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "(unknown: " + err.Error() + ")"
	}
	return loc
}

// poll loads target until the JavaScript expression cond is true there, for state the bridge
// reaches on its own time.
func poll(t *testing.T, br context.Context, target, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	for {
		open(t, br, target)
		if eval[bool](t, br, cond) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s at %s", what, settleTimeout, target)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// maxScreenshot keeps the images in docs/ small enough for the repository and the README.
const maxScreenshot = 300 << 10

// shoot saves a PNG of the current page as dir/name.png, of the whole page or of what the
// window shows; dir "" saves nothing.
func shoot(t *testing.T, br context.Context, dir, name string, full bool) {
	t.Helper()
	if dir == "" {
		return
	}
	capture := chromedp.CaptureScreenshot()
	if full {
		capture = chromedp.FullScreenshot(100) // 100 means PNG
	}
	png := result(t, br, capture)
	file := filepath.Join(dir, name+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatalf("save screenshot: %v", err)
	}
	t.Logf("screenshot %s (%d KB)", file, len(png)>>10)
	if len(png) > maxScreenshot {
		t.Errorf("screenshot %s is %d KB, want at most %d KB", file, len(png)>>10,
			maxScreenshot>>10)
	}
}

// screenshotDir resolves $BRIDGE_SCREENSHOTS against the repository's root; "" when unset.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(screenshotsEnv)
	if dir == "" {
		return ""
	}
	if !filepath.IsAbs(dir) {
		root, err := moduleRoot()
		if err != nil {
			t.Fatalf("%s=%s: %v", screenshotsEnv, dir, err)
		}
		dir = filepath.Join(root, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("%s: %v", screenshotsEnv, err)
	}
	return dir
}

// moduleRoot is the nearest directory at or above the working directory with a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
