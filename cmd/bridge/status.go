package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/discord-authentik-bridge/bridge/authentik"
	"github.com/discord-authentik-bridge/bridge/avatars"
	"github.com/discord-authentik-bridge/bridge/config"
	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/groupmatch"
	"github.com/discord-authentik-bridge/bridge/guild"
	"github.com/discord-authentik-bridge/bridge/reconcile"
	"github.com/discord-authentik-bridge/bridge/web"
)

// Refresh periods of what the status page shows but the reconciler does not keep.
const (
	rolesRefresh     = 5 * time.Minute
	probeInterval    = 30 * time.Second
	probeTimeout     = 5 * time.Second
	groupNamesMaxAge = time.Minute
	// userSearchLimit bounds the Authentik users one search reads.
	userSearchLimit = 20
	// searchCandidates bounds the directory entries one search ranks before it keeps the
	// page's limit, so that an exact match is not lost behind alphabetically earlier ones.
	searchCandidates = 1000
	// usernameMaxAge is how long a username read for the search page is trusted; usernames
	// rarely change, and a stale one only labels a search result.
	usernameMaxAge = 10 * time.Minute
	// maxCachedUsernames bounds the username cache; past it, the cache starts over.
	maxCachedUsernames = 20000
	// usernameLookups is how many users one search reads from Authentik at once.
	usernameLookups = 8
)

// statusSource is the admin page's view of the running bridge.
type statusSource struct {
	cfg     *config.Config
	rec     *reconcile.Reconciler
	ctrl    *reconcile.Controller
	store   reconcile.Store
	gw      *discord.Gateway // nil with the gateway off
	dc      *discord.Client
	ak      *authentik.Client
	hc      *http.Client
	avatars *avatars.Service
	roles   *rolesKeeper
	probe   *authentikProbe
	groups  *groupNames
	ready   func(context.Context) []string
	started time.Time

	// previewing allows one dry full pass at a time: each reads the whole guild.
	previewing sync.Mutex
	usernames  usernameCache
}

var _ web.Status = (*statusSource)(nil)

func (s *statusSource) Health(ctx context.Context) web.Health {
	h := web.Health{Version: version(), Started: s.started, LastEvent: s.ctrl.LastEvent(),
		Queue: s.ctrl.Queue().Stats(), Discord: s.dc.Stats(), Avatars: s.avatars.Stats(),
		AvatarStore: s.avatars.Store().Name(), Authentik: s.probe.get()}
	if s.ready != nil {
		h.Ready = s.ready(ctx)
	}
	if s.gw != nil {
		h.Gateway = web.GatewayHealth{Enabled: true, GatewayStatus: s.gw.Status()}
	}
	rep, err, running := s.ctrl.LastPass()
	h.Pass = web.PassHealth{Running: running, Interval: s.cfg.Sync.ResyncInterval, Last: rep}
	if err != nil {
		h.Pass.Err = err.Error()
	}
	if age, ok := s.rec.MappingAge(); ok {
		// With a mapping cached this answers at once; it never waits on Authentik.
		if m, err := s.rec.Mapping(ctx); err == nil {
			h.MappingLoaded, h.MappingAge = true, age
			h.Managed, h.Invalid = len(m.ManagedGroups()), len(m.Invalid())
			unknown := s.unknownRoles(m)
			h.UnknownRoles, h.UnknownGroups = len(unknown), len(groupsNaming(m, unknown))
		}
	}
	h.RolesFetched, h.RolesError = s.roles.status()
	return h
}

// role resolves a role ID against the guild's roles and the mapping.
func (s *statusSource) role(id string, m *groupmatch.Mapping) web.Role {
	r := web.Role{ID: id, Everyone: id == s.cfg.Discord.GuildID}
	if gr, ok := s.roles.r.Get(id); ok {
		r.Name, r.Color, r.Position, r.Managed, r.Known = gr.Name, gr.Color, gr.Position,
			gr.Managed, true
	} else if r.Everyone {
		r.Name, r.Known = "@everyone", true
	}
	for _, uuid := range m.GroupsForRole(id) {
		if g, ok := m.Group(uuid); ok {
			r.Groups = append(r.Groups, g.Name)
		}
	}
	return r
}

// sortRoles orders roles as Discord lists them: highest position first.
func sortRoles(rs []web.Role) {
	slices.SortStableFunc(rs, func(a, b web.Role) int { return cmp.Compare(b.Position, a.Position) })
}

func (s *statusSource) Mapping(ctx context.Context) (*web.MappingView, error) {
	m, err := s.rec.Mapping(ctx)
	if err != nil {
		return nil, err
	}
	age, _ := s.rec.MappingAge()
	v := &web.MappingView{RolesFetched: s.roles.r.Fetched(), MappingAge: age}

	unknown := s.unknownRoles(m)
	counts := s.desiredCounts(m)
	for _, g := range m.ManagedGroups() {
		mg := web.MappedGroup{UUID: g.UUID, Name: g.Name, Members: -1}
		if counts != nil {
			mg.Members = counts[g.UUID]
		}
		for _, id := range m.RolesForGroup(g.UUID) {
			mg.Roles = append(mg.Roles, s.role(id, m))
			if slices.Contains(unknown, id) {
				mg.Missing = append(mg.Missing, id)
			}
		}
		sortRoles(mg.Roles)
		v.Groups = append(v.Groups, mg)
	}
	for _, gr := range s.roles.r.All() {
		if len(m.GroupsForRole(gr.ID)) == 0 {
			v.UnusedRoles = append(v.UnusedRoles, s.role(gr.ID, m))
		}
	}
	for _, inv := range m.Invalid() {
		v.Invalid = append(v.Invalid, web.InvalidEntry{GroupUUID: inv.GroupUUID,
			GroupName: inv.GroupName, Reason: inv.Reason, Value: inv.Value})
	}
	for _, id := range unknown {
		v.UnknownRoles = append(v.UnknownRoles, web.UnknownRole{RoleID: id,
			Groups: s.role(id, m).Groups})
	}
	return v, nil
}

// unknownRoles returns the role IDs managed groups name that the guild does not have. Once
// the guild's roles were read, they say which; before that, the last pass's list is the best
// there is. The Health and Mapping tabs both count from here, so they agree.
func (s *statusSource) unknownRoles(m *groupmatch.Mapping) []string {
	if s.roles.r.Fetched().IsZero() {
		if rep, _, _ := s.ctrl.LastPass(); rep != nil {
			return slices.DeleteFunc(slices.Clone(rep.UnknownRoles), func(id string) bool {
				return len(m.GroupsForRole(id)) == 0 // no longer mapped
			})
		}
		return nil
	}
	var unknown []string
	for _, id := range m.Roles() {
		if !s.role(id, m).Known {
			unknown = append(unknown, id)
		}
	}
	return unknown
}

// groupsNaming returns the UUIDs of the managed groups one of roleIDs feeds.
func groupsNaming(m *groupmatch.Mapping, roleIDs []string) map[string]bool {
	out := map[string]bool{}
	for _, id := range roleIDs {
		for _, uuid := range m.GroupsForRole(id) {
			out[uuid] = true
		}
	}
	return out
}

// desiredCounts counts, per managed group, the members of the last full pass whose roles call
// for it; nil before the first pass.
func (s *statusSource) desiredCounts(m *groupmatch.Mapping) map[string]int {
	dir := s.rec.Directory()
	if dir == nil {
		return nil
	}
	counts := map[string]int{}
	for _, e := range dir {
		if !e.InGuild {
			continue
		}
		for uuid := range s.rec.DesiredGroups(m, s.membershipOf(e)) {
			counts[uuid]++
		}
	}
	return counts
}

// membershipOf rebuilds the membership a directory entry describes.
func (s *statusSource) membershipOf(e reconcile.Entry) guild.Membership {
	if !e.InGuild {
		return guild.Membership{State: guild.StateAbsent}
	}
	ms := guild.Membership{State: guild.StateMember, Member: &discordgo.Member{
		GuildID: s.cfg.Discord.GuildID, Roles: e.Roles, Nick: e.Nick, Pending: e.Pending,
		User: &discordgo.User{ID: e.DiscordID, Username: e.Username, GlobalName: e.GlobalName},
	}}
	if e.Pending {
		ms.State = guild.StatePending
	}
	return ms
}

func (s *statusSource) Search(ctx context.Context, q string, limit int) (*web.SearchResult, error) {
	res := &web.SearchResult{DirectoryReady: s.rec.Directory() != nil}
	var hits []web.SearchHit
	seen := map[string]bool{}
	add := func(e reconcile.Entry) {
		if !seen[e.DiscordID] {
			seen[e.DiscordID] = true
			hits = append(hits, web.SearchHit{Entry: e})
		}
	}
	for _, e := range s.rec.Search(q, nil, searchCandidates) {
		add(e)
	}

	users, err := s.searchUsers(ctx, q)
	if err != nil {
		res.AuthentikError = err.Error()
	} else {
		res.AuthentikSearched = true
	}
	for _, u := range users {
		s.usernames.put(u.PK, u.Username)
		linked := s.rec.Search("", []int32{u.PK}, 1)
		switch {
		case len(linked) > 0:
			add(linked[0])
		case u.DiscordID != "":
			// Not in the last pass (or none ran yet), but the bridge wrote its Discord ID.
			add(reconcile.Entry{DiscordID: u.DiscordID, UserPKs: []int32{u.PK}})
		default:
			res.Unlinked = append(res.Unlinked, u.Username)
		}
	}

	// Rank with the usernames at hand, keep the page's share, then read the usernames still
	// missing (only when Authentik answers) and rank those again: the names are the sort key.
	s.nameUsers(hits)
	rankHits(q, hits)
	if len(hits) > limit {
		res.More = len(hits) - limit
		hits = hits[:limit]
	}
	if res.AuthentikSearched {
		s.lookUpUsernames(ctx, hits)
		s.nameUsers(hits)
		rankHits(q, hits)
	}
	res.Hits = hits
	return res, nil
}

// nameUsers fills each hit's Users from its Entry's pks with the usernames the cache holds.
func (s *statusSource) nameUsers(hits []web.SearchHit) {
	for i := range hits {
		h := &hits[i]
		h.Users = h.Users[:0]
		for _, pk := range h.Entry.UserPKs {
			name, _ := s.usernames.get(pk)
			h.Users = append(h.Users, web.LinkedUser{PK: pk, Username: name})
		}
	}
}

// lookUpUsernames reads from Authentik, a few at a time, the users of hits whose username the
// cache does not hold. A user that cannot be read stays without one; the page shows its pk.
func (s *statusSource) lookUpUsernames(ctx context.Context, hits []web.SearchHit) {
	var missing []int32
	for _, h := range hits {
		for _, pk := range h.Entry.UserPKs {
			if _, ok := s.usernames.get(pk); !ok && !slices.Contains(missing, pk) {
				missing = append(missing, pk)
			}
		}
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, usernameLookups)
	for _, pk := range missing {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			if u, err := s.ak.User(ctx, pk); err == nil {
				s.usernames.put(pk, u.Username)
			}
		})
	}
	wg.Wait()
}

// rankHits orders search results: exact matches of q (a Discord ID, a Discord username or an
// Authentik username, in any case) first, then alphabetically by the name the page shows.
func rankHits(q string, hits []web.SearchHit) {
	q = strings.ToLower(strings.TrimSpace(q))
	exact := func(h web.SearchHit) bool {
		if h.Entry.DiscordID == q || strings.ToLower(h.Entry.Username) == q {
			return true
		}
		return slices.ContainsFunc(h.Users, func(u web.LinkedUser) bool {
			return u.Username != "" && strings.ToLower(u.Username) == q
		})
	}
	slices.SortStableFunc(hits, func(a, b web.SearchHit) int {
		ea, eb := exact(a), exact(b)
		if ea != eb {
			if ea {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(strings.ToLower(a.Name()), strings.ToLower(b.Name())),
			cmp.Compare(a.Entry.DiscordID, b.Entry.DiscordID))
	})
}

// usernameCache remembers Authentik usernames by pk for the search page: the last full pass
// knows linked users only by pk.
type usernameCache struct {
	mu    sync.Mutex
	names map[int32]cachedUsername
}

type cachedUsername struct {
	username string
	read     time.Time
}

func (c *usernameCache) get(pk int32) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.names[pk]
	if !ok || time.Since(n.read) > usernameMaxAge {
		return "", false
	}
	return n.username, true
}

func (c *usernameCache) put(pk int32, username string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.names == nil || len(c.names) >= maxCachedUsernames {
		c.names = map[int32]cachedUsername{}
	}
	c.names[pk] = cachedUsername{username: username, read: time.Now()}
}

// foundUser is an Authentik user a username search returned.
type foundUser struct {
	PK        int32
	Username  string
	DiscordID string // from attributes.discord.id, which the bridge writes
}

// searchUsers asks Authentik's user list for q. The authentik package has no search, and the
// page needs only this one read, so it is made here with the same client and token.
func (s *statusSource) searchUsers(ctx context.Context, q string) ([]foundUser, error) {
	if len(q) > 100 {
		q = q[:100]
	}
	v := url.Values{"search": {q}, "page_size": {fmt.Sprint(userSearchLimit)},
		"include_groups": {"false"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		s.cfg.Authentik.URL+"/api/v3/core/users/?"+v.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("search authentik users: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.Authentik.Token.Reveal())
	req.Header.Set("Accept", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("search authentik users: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("search authentik users: status %d", resp.StatusCode)
	}
	var body struct {
		Results []struct {
			PK         int32  `json:"pk"`
			Username   string `json:"username"`
			Attributes struct {
				Discord struct {
					ID json.RawMessage `json:"id"`
				} `json:"discord"`
			} `json:"attributes"`
		} `json:"results"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&body); err != nil {
		return nil, fmt.Errorf("search authentik users: decode: %w", err)
	}
	out := make([]foundUser, 0, len(body.Results))
	for _, r := range body.Results {
		u := foundUser{PK: r.PK, Username: r.Username}
		// The ID may have been written as a number by hand; its digits are what count.
		if id := strings.Trim(string(r.Attributes.Discord.ID), `"`); isDigits(id) {
			u.DiscordID = id
		}
		out = append(out, u)
	}
	return out, nil
}

func isDigits(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (s *statusSource) Member(ctx context.Context, discordID string) (*web.MemberView, error) {
	v := &web.MemberView{DiscordID: discordID}
	if e, ok := s.rec.Directory()[discordID]; ok {
		v.Entry = &e
	}
	last, ok, err := s.store.LastSync(ctx, discordID)
	if err != nil {
		return nil, err
	}
	if ok {
		v.LastSync = &last
	}
	if v.Recent, err = s.store.Changes(ctx, reconcile.ChangeFilter{DiscordID: discordID,
		Limit: 10}); err != nil {
		return nil, err
	}

	m, err := s.rec.Mapping(ctx)
	if err != nil {
		v.PlanError = "the group mapping could not be read: " + err.Error()
		return v, nil
	}
	var ms guild.Membership
	plan, err := s.rec.Plan(ctx, reconcile.Target{DiscordID: discordID})
	switch {
	case err != nil:
		v.PlanError = err.Error()
		if v.Entry == nil {
			return v, nil
		}
		ms = s.membershipOf(*v.Entry)
	default:
		v.Plan = plan
		ms = plan.Membership
		v.State = string(ms.State)
	}
	if mem := ms.Member; mem != nil {
		v.Nick, v.DisplayName = mem.Nick, discord.DisplayName(mem)
		if mem.User != nil {
			v.Username = mem.User.Username
		}
	}
	for _, id := range ms.RoleIDs() {
		v.Roles = append(v.Roles, s.role(id, m))
	}
	sortRoles(v.Roles)
	for uuid := range s.rec.DesiredGroups(m, ms) {
		if g, ok := m.Group(uuid); ok {
			v.Desired = append(v.Desired, g.Name)
		}
	}
	sort.Strings(v.Desired)
	if plan != nil {
		for _, up := range plan.Users {
			mu, last := s.memberUser(ctx, up)
			v.Users = append(v.Users, mu)
			// Without the member itself, the names the bridge last wrote are the best left.
			if v.Username == "" && v.LastUsername == "" && last.Username != "" {
				v.LastUsername, v.LastDisplayName = last.Username, last.display()
			}
		}
	}
	return v, nil
}

// lastDiscord is the part of attributes.discord that names the account, as the bridge last
// wrote it.
type lastDiscord struct {
	Username   string  `json:"username"`
	GlobalName *string `json:"global_name"`
	Nick       *string `json:"nick"`
}

// display is the name Discord showed: the nickname, else the global name, else "".
func (l lastDiscord) display() string {
	for _, n := range []*string{l.Nick, l.GlobalName} {
		if n != nil && *n != "" {
			return *n
		}
	}
	return ""
}

// memberUser adds what the `groups` claim holds now and will hold after the plan is applied:
// the plan only adds and removes managed groups, so every other group stays as it is. It
// also returns the Discord names the user's attributes.discord holds.
func (s *statusSource) memberUser(ctx context.Context, up reconcile.UserPlan) (web.MemberUser,
	lastDiscord) {
	mu := web.MemberUser{PK: up.PK, Username: up.Username, AvatarURL: up.AvatarURL}
	var last lastDiscord
	u, err := s.ak.User(ctx, up.PK)
	if err != nil {
		return mu, last
	}
	s.usernames.put(u.PK, u.Username)
	mu.Name = u.Name
	if raw, ok := u.Attributes["discord"]; ok {
		_ = json.Unmarshal(raw, &last) // a hand-edited value that does not decode names nobody
	}
	if mu.AvatarURL == "" {
		_ = json.Unmarshal(u.Attributes["avatar"], &mu.AvatarURL)
	}
	names, err := s.groups.get(ctx)
	if err != nil {
		return mu, last
	}
	nameOf := func(uuid string) string {
		if n, ok := names[uuid]; ok {
			return n
		}
		return uuid // a group created since the names were read
	}
	after := map[string]bool{}
	for _, uuid := range u.Groups {
		after[uuid] = true
		mu.GroupsNow = append(mu.GroupsNow, nameOf(uuid))
	}
	for _, g := range up.Remove {
		delete(after, g.Group.UUID)
	}
	for _, g := range up.Add {
		after[g.Group.UUID] = true
	}
	for uuid := range after {
		mu.GroupsAfter = append(mu.GroupsAfter, nameOf(uuid))
	}
	sort.Strings(mu.GroupsNow)
	sort.Strings(mu.GroupsAfter)
	if mu.GroupsNow == nil {
		mu.GroupsNow = []string{}
	}
	if mu.GroupsAfter == nil {
		mu.GroupsAfter = []string{}
	}
	return mu, last
}

func (s *statusSource) Activity(ctx context.Context, f reconcile.ChangeFilter) ([]reconcile.Change, error) {
	return s.store.Changes(ctx, f)
}

func (s *statusSource) SyncMember(ctx context.Context, discordID, trigger string,
	dryRun bool) (*reconcile.Outcome, error) {
	out, err := s.rec.Sync(ctx, reconcile.Target{DiscordID: discordID}, trigger, dryRun)
	if err == nil && !dryRun {
		s.roles.poke()
	}
	return out, err
}

// errPreviewRunning answers a second dry full pass while one runs.
var errPreviewRunning = errors.New(
	"a dry run of a full pass is already running; wait for it and try again")

func (s *statusSource) PreviewAll(ctx context.Context) (*reconcile.PassReport, error) {
	if !s.previewing.TryLock() {
		return nil, errPreviewRunning
	}
	defer s.previewing.Unlock()
	return s.rec.FullPass(ctx, reconcile.PassOptions{Trigger: "admin_preview", DryRun: true})
}

func (s *statusSource) RequestFullPass() { s.ctrl.RequestPass(reconcile.TriggerAdmin) }

// rolesKeeper keeps the guild's roles fresh for the page: on a timer, after every full pass
// and after role events.
type rolesKeeper struct {
	r    *guild.Roles
	log  *slog.Logger
	kick chan struct{}

	mu      sync.Mutex
	lastErr string
}

func newRolesKeeper(l guild.RoleLister, guildID string, log *slog.Logger) *rolesKeeper {
	return &rolesKeeper{r: guild.NewRoles(l, guildID), log: log, kick: make(chan struct{}, 1)}
}

// poke asks for a refresh soon; pokes during a refresh fold into one more.
func (k *rolesKeeper) poke() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

func (k *rolesKeeper) run(ctx context.Context) {
	t := time.NewTicker(rolesRefresh)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := k.r.Refresh(rctx)
		cancel()
		k.mu.Lock()
		prev := k.lastErr
		k.lastErr = ""
		if err != nil {
			k.lastErr = err.Error()
		}
		k.mu.Unlock()
		if err != nil && prev == "" && ctx.Err() == nil {
			k.log.Warn("read discord roles for the status page", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-k.kick:
		}
	}
}

func (k *rolesKeeper) status() (time.Time, string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.r.Fetched(), k.lastErr
}

// authentikProbe checks Authentik's API in the background, so the page and metrics read a
// recent answer without calling Authentik themselves.
type authentikProbe struct {
	ak  *authentik.Client
	url string
	log *slog.Logger

	mu   sync.Mutex
	last web.AuthentikHealth
}

func (p *authentikProbe) run(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err := p.ak.Me(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		h := web.AuthentikHealth{URL: p.url, Reachable: err == nil, Checked: time.Now()}
		if err != nil {
			h.Err = err.Error()
		}
		p.mu.Lock()
		was := p.last
		p.last = h
		p.mu.Unlock()
		if !was.Checked.IsZero() && was.Reachable != h.Reachable {
			if h.Reachable {
				p.log.Info("authentik reachable again")
			} else {
				p.log.Warn("authentik unreachable", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *authentikProbe) get() web.AuthentikHealth {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.last
	h.URL = p.url
	return h
}

// groupNames caches the names of every Authentik group, managed or not, for the downstream
// preview's `groups` claim.
type groupNames struct {
	ak *authentik.Client

	mu      sync.Mutex
	names   map[string]string
	fetched time.Time
}

func (g *groupNames) get(ctx context.Context) (map[string]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.names != nil && time.Since(g.fetched) < groupNamesMaxAge {
		return g.names, nil
	}
	groups, err := g.ak.Groups(ctx)
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(groups))
	for _, gr := range groups {
		names[gr.UUID] = gr.Name
	}
	g.names, g.fetched = names, time.Now()
	return names, nil
}

// imageOrigins are the origins hosted avatars are served from, for the page's CSP.
func imageOrigins(cfg *config.Config) []string {
	out := []string{cfg.PublicURL}
	if cfg.Avatar.Store == config.AvatarStoreS3 && cfg.S3.PublicURL != "" {
		out = append(out, cfg.S3.PublicURL)
	}
	return out
}

// upstreamNames labels the upstream latency metric by the hosts the bridge calls.
func upstreamNames(cfg *config.Config) map[string]string {
	names := map[string]string{}
	for _, u := range []struct{ raw, name string }{
		{cfg.Discord.APIURL, "discord"},
		{cfg.Authentik.URL, "authentik"},
		{cfg.OIDC.Issuer, "authentik"},
	} {
		if p, err := url.Parse(u.raw); err == nil && p.Host != "" {
			if _, taken := names[p.Host]; !taken {
				names[p.Host] = u.name
			}
		}
	}
	return names
}
