package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/discord-authentik-bridge/bridge/authentik"
	"github.com/discord-authentik-bridge/bridge/groupmatch"
	"github.com/discord-authentik-bridge/bridge/guild"
)

// memberPage is the largest page of members Discord serves.
const memberPage = 1000

// guildLister is what a full pass needs from Discord besides single members.
type guildLister interface {
	MembersPage(ctx context.Context, guildID, after string, limit int) ([]*discordgo.Member, error)
	Roles(ctx context.Context, guildID string) ([]*discordgo.Role, error)
}

// bulkAuthentik is what a full pass needs from Authentik besides single users.
type bulkAuthentik interface {
	GroupsWithMembers(ctx context.Context, visit func(authentik.GroupMembers) error) error
	Connections(ctx context.Context) ([]authentik.Connection, error)
}

// ErrRemovalGuard reports a full pass that stopped before applying anything because it would
// have stripped managed groups from more linked users than BRIDGE_MAX_REMOVAL_SHARE allows.
var ErrRemovalGuard = errors.New("mass-removal guard tripped")

// ErrInterrupted reports a full pass cut short (SIGTERM, shutdown) before it had synced every
// member it found out of date, or before it had listed everything; the next pass finishes.
var ErrInterrupted = errors.New("full pass interrupted")

// ErrNoMembers reports a member list with nobody in it. Discord answers that way when
// something is wrong (an intent switched off, a guild the bot left), never for a real guild
// with linked users, so it is not taken to mean that everyone left.
var ErrNoMembers = errors.New("discord listed no members at all")

// PassOptions tune one full pass.
type PassOptions struct {
	Trigger string
	DryRun  bool // compute every plan, apply none
	Force   bool // apply even when the mass-removal guard trips
	// Queue, when set, retries the syncs that failed for a passing reason, with back-off.
	Queue *Queue
}

// PassReport is what a full pass found and did.
type PassReport struct {
	Trigger         string
	Started, Ended  time.Time
	Members         int // members Discord listed
	Linked          int // Authentik users linked to a Discord account
	Stale           int // linked users whose state differs from the desired one
	Removals        int // linked users who would lose a managed group
	Applied, Errors int // syncs the pass applied, and those that failed
	Queued          int // failed syncs handed to the work queue to retry
	// Superseded counts members the pass left alone because another sync (a gateway event,
	// a login) applied a newer view of them while the pass ran.
	Superseded int
	// NotReached counts out-of-date members an interrupted pass never got to.
	NotReached   int
	Changes      int
	UnknownRoles []string // discord_role_id values that name no role of the guild
	Invalid      []groupmatch.Invalid
	Plans        []*Plan // filled on a dry run
	Stopped      string  // why nothing was applied, when the guard tripped
	FirstErrors  []string
}

// Duration is how long the pass took.
func (p *PassReport) Duration() time.Duration { return p.Ended.Sub(p.Started) }

// FullPass compares every linked Authentik user with the guild and syncs those that differ.
// It reads Authentik in bulk (groups with their members, all source connections) and Discord
// page by page, so its cost grows with the guild only through pages and real changes: users
// are read again only when something about them is to change, in batches just before their
// writes.
func (r *Reconciler) FullPass(ctx context.Context, o PassOptions) (*PassReport, error) {
	rep, err := r.fullPass(ctx, o)
	// Only a failure the interruption caused is reported as one: a 403 that arrived as the
	// pass was being stopped still needs an admin.
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) &&
		!errors.Is(err, ErrInterrupted) {
		r.log.Warn("full pass interrupted while listing", "trigger", o.Trigger)
		err = fmt.Errorf("%w while listing: %w", ErrInterrupted, interruption(ctx))
	}
	return rep, err
}

// interruption is why ctx ended, naming the signal when a signal ended it.
func interruption(ctx context.Context) error {
	if cause := context.Cause(ctx); cause != nil && cause != ctx.Err() {
		return fmt.Errorf("%v: %w", cause, ctx.Err())
	}
	return ctx.Err()
}

func (r *Reconciler) fullPass(ctx context.Context, o PassOptions) (*PassReport, error) {
	rep := &PassReport{Trigger: o.Trigger, Started: r.opts.Now()}
	defer func() { rep.Ended = r.opts.Now() }()
	if !o.DryRun {
		began := rep.Started
		r.passBegan.Store(&began)
		r.passing.Store(true)
		defer func() {
			r.passing.Store(false)
			r.recent.Clear()
		}()
	}
	dl, ok := r.discord.(guildLister)
	if !ok {
		return rep, errors.New("full pass: the Discord client cannot list members")
	}
	bulk, ok := r.ak.(bulkAuthentik)
	if !ok {
		return rep, errors.New("full pass: the Authentik client cannot list in bulk")
	}

	var states map[int32]UserState
	if r.store != nil {
		var err error
		if states, err = r.store.UserStates(ctx); err != nil {
			return rep, fmt.Errorf("full pass: %w", err)
		}
	}

	// Groups come page by page; of each, the pass keeps the member pks and, for users it
	// remembers nothing about, a fingerprint of their listed attributes.discord. (Over a new
	// data directory that is every user: the raw values would take three times the memory.)
	var (
		plain     []groupmatch.Group
		membersOf = map[string][]int32{}   // group uuid → member pks
		listed    = map[int32]listedAttr{} // unknown users only
	)
	err := bulk.GroupsWithMembers(ctx, func(g authentik.GroupMembers) error {
		plain = append(plain, g.Group)
		membersOf[g.UUID] = g.Members
		for pk, raw := range g.Owned {
			if _, known := states[pk]; known {
				continue
			}
			if _, done := listed[pk]; !done {
				listed[pk] = r.listedAttr(raw)
			}
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("full pass: %w", err)
	}
	mapping := groupmatch.Build(plain, groupmatch.Options{AllowSuperuser: r.opts.AllowSuperuser})
	r.mapping.set(mapping)
	rep.Invalid = mapping.Invalid()
	current := map[int32][]string{} // user pk → managed groups it is in
	for uuid, pks := range membersOf {
		if !mapping.Managed(uuid) {
			continue
		}
		for _, pk := range pks {
			current[pk] = append(current[pk], uuid)
		}
	}
	membersOf = nil

	roles, err := dl.Roles(ctx, r.opts.GuildID)
	if err != nil {
		return rep, fmt.Errorf("full pass: list roles: %w", err)
	}
	rep.UnknownRoles = unknownRoles(mapping, roles)
	for _, id := range rep.UnknownRoles {
		r.log.Warn("discord_role_id names no role of the guild; its groups lose the members it fed",
			"role_id", id, "groups", groupNames(mapping, mapping.GroupsForRole(id)))
	}

	listedAt := r.opts.Now()
	members, err := r.listMembers(ctx, dl)
	if err != nil {
		return rep, err
	}
	rep.Members = len(members)

	conns, err := bulk.Connections(ctx)
	if err != nil {
		return rep, fmt.Errorf("full pass: %w", err)
	}
	linked := map[string][]int32{}
	for _, c := range conns {
		linked[c.Identifier] = append(linked[c.Identifier], c.UserPK)
		rep.Linked++
	}
	r.setDirectory(members, linked)

	var (
		todo    []passItem
		learned []UserState // fingerprints of users found current without a remembered state
	)
	for id, pks := range linked {
		ms := guild.Membership{State: guild.StateAbsent}
		if lm, ok := members[id]; ok {
			m := lm.member()
			ms = guild.Membership{State: guild.StateMember, Member: m}
			if m.Pending {
				ms.State = guild.StatePending
			}
		}
		stale, removes := r.quickDiff(mapping, ms, pks, current, states, listed, &learned)
		if removes {
			rep.Removals += len(pks)
		}
		if stale {
			rep.Stale += len(pks)
			todo = append(todo, passItem{id: id, known: ms, pks: pks})
		}
	}
	sort.Slice(todo, func(i, j int) bool { return todo[i].id < todo[j].id })
	if r.store != nil && len(learned) > 0 && !o.DryRun {
		if err := r.store.AddUserStates(ctx, learned); err != nil {
			r.log.Warn("remember user states", "users", len(learned), "err", err)
		} else {
			// The cache holds only what syncs stored, which the store kept over a learned
			// state; dropping the key all the same keeps the two from ever disagreeing.
			for _, st := range learned {
				r.states.Delete(st.UserPK)
			}
		}
	}

	if limit := r.opts.MaxRemovalShare; limit > 0 && rep.Linked > 0 && !o.Force &&
		float64(rep.Removals) > limit*float64(rep.Linked) {
		rep.Stopped = fmt.Sprintf("%d of %d linked users (%.0f %%) would lose managed groups, "+
			"more than BRIDGE_MAX_REMOVAL_SHARE (%.0f %%); nothing was applied. Check the guild "+
			"and the mapping, then run `bridge sync --all --force` if this is intended",
			rep.Removals, rep.Linked, 100*float64(rep.Removals)/float64(rep.Linked), 100*limit)
		// A dry run goes on to show the plans the guard would hold back.
		if !o.DryRun {
			r.log.Error("full pass stopped by the mass-removal guard", "removals", rep.Removals,
				"linked", rep.Linked, "max_share", limit)
			return rep, ErrRemovalGuard
		}
	}

	reached := 0
	switch {
	case o.DryRun:
		br := r.batchReads()
		for len(todo) > reached && ctx.Err() == nil {
			batch := todo[reached:min(reached+readBatch, len(todo))]
			users, _ := br.read(ctx, batch)
			for _, w := range batch {
				if ctx.Err() != nil {
					break
				}
				reached++
				known := w.known
				p, err := r.Plan(ctx, Target{DiscordID: w.id, UserPKs: w.pks, Known: &known,
					Users: users[w.id]})
				if err != nil {
					rep.addError(w.id, err)
					continue
				}
				rep.Plans = append(rep.Plans, p)
			}
		}
	default:
		reached = r.applyAll(ctx, todo, o, listedAt, rep)
	}
	if ctx.Err() != nil && (reached < len(todo) || rep.Errors > 0) {
		// Members never reached are not errors of theirs, and syncs cut short are not
		// failures of Authentik or Discord, but the pass did not do its job: its caller must
		// not take it for a finished one.
		rep.NotReached = len(todo) - reached
		r.log.Warn("full pass interrupted", "trigger", o.Trigger, "stale", len(todo),
			"not_reached", rep.NotReached, "applied", rep.Applied, "errors", rep.Errors)
		return rep, fmt.Errorf("%w with %d of %d out-of-date members not reached and %d "+
			"failed: %w", ErrInterrupted, rep.NotReached, len(todo), rep.Errors, interruption(ctx))
	}
	r.badAvatars.Range(func(k, v any) bool {
		if r.opts.Now().Sub(v.(avatarFailure).at) >= avatarRetryAfter {
			r.badAvatars.Delete(k)
		}
		return true
	})
	r.log.Info("full pass finished", "trigger", o.Trigger, "members", rep.Members,
		"linked", rep.Linked, "stale", rep.Stale, "applied", rep.Applied, "changes", rep.Changes,
		"errors", rep.Errors, "retrying", rep.Queued, "superseded", rep.Superseded,
		"took", r.opts.Now().Sub(rep.Started))
	return rep, nil
}

// passItem is one Discord account a full pass found out of date.
type passItem struct {
	id    string
	known guild.Membership
	pks   []int32
}

// passWorkers bounds the syncs a pass runs at once.
const passWorkers = 4

// readBatch is how many out-of-date members a pass reads from Authentik in one request
// before writing them. Authentik's PATCH replaces the whole attributes map and has no ETag, so
// every write goes out on a copy read shortly before. A batch is read only once the one before
// has been handed to the workers, so about twelve syncs, three per worker, start between a
// copy's read and its own sync: a copy is some three sync durations older than one read by
// the sync itself, for an eighth of the requests. A sync lasts milliseconds, or as long as
// the avatar fetch when the member's avatar changed (up to its 10 s timeout).
const readBatch = 2 * passWorkers

// batchReader reads many users in one request; *authentik.Client provides it.
type batchReader interface {
	UsersByDiscordIDs(ctx context.Context, ids []string) (map[int32]*authentik.User, error)
}

// passJob is one out-of-date member with the users read for it.
type passJob struct {
	passItem
	users  map[int32]*authentik.User
	readAt time.Time
}

// applyAll syncs the out-of-date members with passWorkers workers, fed by a reader that reads
// their users batch by batch, and returns how many it got to before ctx ended. A sync that
// fails for a passing reason is handed to o.Queue, when there is one, to retry with back-off.
func (r *Reconciler) applyAll(ctx context.Context, todo []passItem, o PassOptions,
	listedAt time.Time, rep *PassReport) (reached int) {
	jobs := make(chan passJob)
	go func() {
		defer close(jobs)
		br := r.batchReads()
		for len(todo) > 0 {
			batch := todo[:min(readBatch, len(todo))]
			todo = todo[len(batch):]
			users, readAt := br.read(ctx, batch)
			for _, w := range batch {
				select {
				case jobs <- passJob{passItem: w, users: users[w.id], readAt: readAt}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for range passWorkers {
		wg.Go(func() {
			for j := range jobs {
				if ctx.Err() != nil {
					// Handed out as the pass ended (select picks at random among ready
					// cases): never attempted, so not an error of the member's.
					continue
				}
				known := j.known
				out, err := r.Sync(ctx, Target{DiscordID: j.id, UserPKs: j.pks, Known: &known,
					ObservedAt: listedAt, Users: j.users, ReadAt: j.readAt}, o.Trigger, false)
				mu.Lock()
				reached++
				switch {
				case err != nil:
					rep.addError(j.id, err)
					if o.Queue != nil && Transient(err) && ctx.Err() == nil {
						o.Queue.Retry(j.id, o.Trigger, j.pks)
						rep.Queued++
					}
				case out.Result == ResultSuperseded:
					rep.Superseded++
				default:
					rep.Applied++
				}
				if out != nil {
					rep.Changes += len(out.Changes)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return reached
}

// batchReads reads, for one pass, the users of its out-of-date members batch by batch.
type batchReads struct {
	r      *Reconciler
	br     batchReader // nil once Authentik has shown it ignores the filter
	failed bool        // a batch read has failed in this pass
}

func (r *Reconciler) batchReads() *batchReads {
	br, _ := r.ak.(batchReader)
	return &batchReads{r: r, br: br}
}

// read reads the linked users of a batch in one request, keyed by Discord ID. A failed read
// costs only requests: the syncs then read their users one by one. An answer showing that
// Authentik ignored the filter turns batch reads off for the rest of the pass.
func (b *batchReads) read(ctx context.Context,
	batch []passItem) (map[string]map[int32]*authentik.User, time.Time) {
	if b.br == nil {
		return nil, time.Time{}
	}
	ids := make([]string, len(batch))
	for i, w := range batch {
		ids[i] = w.id
	}
	readAt := b.r.opts.Now()
	got, err := b.br.UsersByDiscordIDs(ctx, ids)
	switch {
	case errors.Is(err, authentik.ErrFilterIgnored):
		b.r.log.Warn("Authentik ignored the attributes filter; this pass reads users one by one",
			"err", err)
		b.br = nil
		return nil, time.Time{}
	case err != nil && ctx.Err() == nil:
		// A warning once a pass, then debug: an Authentik that fails every batch read
		// doubles the pass's calls, which an operator should hear of, but once is enough.
		level := slog.LevelWarn
		if b.failed {
			level = slog.LevelDebug
		}
		b.failed = true
		b.r.log.Log(ctx, level, "batch read of users failed; reading them one by one",
			"users", len(ids), "err", err)
		return nil, time.Time{}
	case err != nil:
		return nil, time.Time{}
	}
	out := make(map[string]map[int32]*authentik.User, len(batch))
	for _, w := range batch {
		for _, pk := range w.pks {
			if u, ok := got[pk]; ok {
				if out[w.id] == nil {
					out[w.id] = map[int32]*authentik.User{}
				}
				out[w.id][pk] = u
			}
		}
	}
	return out, readAt
}

func (rep *PassReport) addError(id string, err error) {
	rep.Errors++
	if len(rep.FirstErrors) < 10 {
		// One line each: a sync's errors come joined by newlines.
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		rep.FirstErrors = append(rep.FirstErrors, id+": "+msg)
	}
}

// listMembers pages through the whole guild. Members are kept in a compact form: a full
// discordgo.Member per member would hold three times the memory for fields the bridge never
// reads.
func (r *Reconciler) listMembers(ctx context.Context, dl guildLister) (map[string]liteMember, error) {
	members := map[string]liteMember{}
	after := "0"
	for {
		page, err := dl.MembersPage(ctx, r.opts.GuildID, after, memberPage)
		if err != nil {
			return nil, fmt.Errorf("full pass: list members after %s: %w", after, err)
		}
		for _, m := range page {
			if m.User == nil {
				continue
			}
			members[m.User.ID] = lite(m)
			after = m.User.ID
		}
		if len(page) < memberPage {
			break
		}
	}
	if len(members) == 0 {
		return nil, fmt.Errorf("full pass: %w; is the Server Members intent on?", ErrNoMembers)
	}
	return members, nil
}

// liteMember is the part of a guild member the bridge uses.
type liteMember struct {
	id, username, globalName, discriminator, avatar string
	nick, guildAvatar                               string
	roles                                           []string
	pending                                         bool
}

func lite(m *discordgo.Member) liteMember {
	return liteMember{
		id: m.User.ID, username: m.User.Username, globalName: m.User.GlobalName,
		discriminator: m.User.Discriminator, avatar: m.User.Avatar,
		nick: m.Nick, guildAvatar: m.Avatar, roles: m.Roles, pending: m.Pending,
	}
}

func (l liteMember) member() *discordgo.Member {
	return &discordgo.Member{
		User: &discordgo.User{ID: l.id, Username: l.username, GlobalName: l.globalName,
			Discriminator: l.discriminator, Avatar: l.avatar},
		Nick: l.nick, Avatar: l.guildAvatar, Roles: l.roles, Pending: l.pending,
	}
}

// quickDiff tells from the bulk data whether the users of one Discord account need a sync,
// without reading them: their managed groups come from the group listing, and their owned
// attributes are compared with the fingerprint of what the bridge last wrote. A user the
// bridge remembers nothing about (a new data directory) is compared with the attributes the
// group listing carried, and its fingerprint is learned when they match.
func (r *Reconciler) quickDiff(m *groupmatch.Mapping, ms guild.Membership, pks []int32,
	current map[int32][]string, states map[int32]UserState,
	listed map[int32]listedAttr, learned *[]UserState) (stale, removes bool) {
	present := ms.State != guild.StateAbsent
	if !present && r.opts.OnLeave == OnLeaveKeep {
		return false, false
	}
	desired := r.DesiredGroups(m, ms)
	var (
		attr DiscordAttribute
		hash string
	)
	if present {
		attr = discordAttribute(ms.Member, ms.RoleIDs())
		attr.Avatar = r.avatarHash(ms.Member)
		hash = attrHash(attr)
	}
	for _, pk := range pks {
		have := current[pk]
		for _, g := range have {
			if !desired[g] {
				stale, removes = true, true
			}
		}
		for g := range desired {
			if !slices.Contains(have, g) {
				stale = true
			}
		}
		st, known := states[pk]
		if !known && present {
			if l, ok := listed[pk]; ok && l.hash != "" && l.hash == hash {
				st = UserState{UserPK: pk, DiscordID: ms.Member.User.ID, AttrHash: hash,
					AvatarKey: l.avatarKey, UpdatedAt: r.opts.Now().UTC()}
				known = true
				*learned = append(*learned, st)
			}
		}
		switch {
		case present && (!known || st.AttrHash != hash || !st.AbsentSince.IsZero() ||
			st.DeactivatedByBridge):
			stale = true
		case !present && (!known || st.AbsentSince.IsZero()):
			stale = true
		case !present && r.opts.OnLeave == OnLeaveDeactivate && !st.DeactivatedByBridge &&
			r.opts.Now().Sub(st.AbsentSince) >= r.opts.LeaveGrace:
			stale = true
		}
	}
	return stale, removes
}

// unknownRoles returns the mapped role IDs that the guild does not have.
func unknownRoles(m *groupmatch.Mapping, roles []*discordgo.Role) []string {
	have := map[string]bool{}
	for _, r := range roles {
		have[r.ID] = true
	}
	var out []string
	for _, id := range m.Roles() {
		if !have[id] {
			out = append(out, id)
		}
	}
	return out
}

func groupNames(m *groupmatch.Mapping, uuids []string) string {
	var names []string
	for _, u := range uuids {
		if g, ok := m.Group(u); ok {
			names = append(names, g.Name)
		}
	}
	return strings.Join(names, ", ")
}

// listedAttr is what a pass keeps of the attributes.discord a group listing carried for a
// user it remembers nothing about: enough to learn the user's state if it is current.
type listedAttr struct {
	hash      string // attrHash of the value, which leaves out the avatar URL; "" never matches
	avatarKey string // store key of the hosted avatar it points at, kept safe from collection
}

func (r *Reconciler) listedAttr(raw json.RawMessage) listedAttr {
	var d DiscordAttribute
	// Without roles the value is not one the bridge wrote (sameAttribute refuses it too).
	if json.Unmarshal(raw, &d) != nil || d.Roles == nil {
		return listedAttr{}
	}
	l := listedAttr{hash: attrHash(d)}
	if r.opts.Avatars != nil && d.AvatarURL != nil {
		l.avatarKey, _ = r.opts.Avatars.KeyOf(*d.AvatarURL)
	}
	return l
}
