// Package reconcile is the bridge's controller. For one Discord user it reads the guild
// membership and the user's Authentik state, derives the desired state, and applies the
// difference, and nothing else. Every trigger (a login, a gateway event, a full pass, an admin)
// only says "this user may be stale"; applying the same plan twice changes nothing.
package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/discord-authentik-bridge/bridge/authentik"
	"github.com/discord-authentik-bridge/bridge/avatars"
	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/groupmatch"
	"github.com/discord-authentik-bridge/bridge/guild"
)

// Authentik is what the reconciler needs from Authentik; *authentik.Client provides it.
type Authentik interface {
	User(ctx context.Context, pk int32) (*authentik.User, error)
	UsersByDiscordID(ctx context.Context, discordID string) ([]int32, error)
	Groups(ctx context.Context) ([]groupmatch.Group, error)
	AddToGroup(ctx context.Context, groupUUID string, pk int32) error
	RemoveFromGroup(ctx context.Context, groupUUID string, pk int32) error
	UpdateUser(ctx context.Context, pk int32, u authentik.Update) error
	SetActive(ctx context.Context, pk int32, active bool) error
	Revoke(ctx context.Context, pk int32, username string) (int, error)
}

var _ Authentik = (*authentik.Client)(nil)

// Leave policies: what happens to the Authentik user of someone who is not in the guild.
const (
	OnLeaveRemoveGroups = "remove_groups"
	OnLeaveKeep         = "keep"
	OnLeaveDeactivate   = "deactivate"
)

// Options tune a Reconciler.
type Options struct {
	GuildID        string
	AllowSuperuser bool          // manage groups marked superuser
	SetName        bool          // keep the Authentik name equal to the Discord display name
	OnLeave        string        // one of the OnLeave constants
	LeaveGrace     time.Duration // with OnLeaveDeactivate: how long someone is absent first
	RevokeOnLoss   bool          // end sessions and tokens when a managed group is removed
	// MaxRemovalShare is the share of linked users a full pass may strip of managed groups
	// before it stops and reports instead; 0 turns the guard off.
	MaxRemovalShare float64
	MappingRefresh  time.Duration // how long a fetched group mapping is used before refetching
	// Avatars hosts members' avatars; nil leaves attributes.avatar alone.
	Avatars AvatarSyncer
	Now     func() time.Time
}

// AvatarSyncer hosts avatars; *avatars.Service provides it.
type AvatarSyncer interface {
	Source(m avatars.Member) (avatars.Source, error)
	Sync(ctx context.Context, m avatars.Member, cur avatars.Current) (avatars.Result, error)
	KeyOf(url string) (string, bool)
}

// Reconciler syncs Discord users into Authentik.
type Reconciler struct {
	discord guild.MemberGetter
	ak      Authentik
	store   Store
	log     *slog.Logger
	opts    Options
	mapping *mappingCache
	locks   keyedMutex
	dir     atomic.Pointer[directory]
	// badAvatars maps a CDN URL that failed for good to its avatarFailure; every full pass
	// sweeps out the expired ones.
	badAvatars sync.Map
	states     sync.Map // user pk → UserState, a cache of the store's
	// While a full pass applies, recent maps the Discord ID of every member synced since the
	// pass began to its recentSync, so that the pass can tell its own view is out of date.
	passing atomic.Bool
	recent  sync.Map
	// passBegan is when the newest full pass that applies began. A view of a member older
	// than that may undo what the pass writes, or land after the pass read Authentik and so
	// escape it: a sync holding such a view asks Discord afresh.
	passBegan atomic.Pointer[time.Time]
}

// beforePass reports whether a view observed at at is older than the newest full pass.
func (r *Reconciler) beforePass(at time.Time) bool {
	began := r.passBegan.Load()
	return began != nil && !at.IsZero() && at.Before(*began)
}

// recentSync is when a sync of a member finished, and how fresh its view of the member was.
type recentSync struct {
	finished time.Time
	observed time.Time // zero when the sync failed
}

// New returns a Reconciler. store may be nil in tools that keep no history.
func New(d guild.MemberGetter, ak Authentik, store Store, log *slog.Logger, o Options) *Reconciler {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnLeave == "" {
		o.OnLeave = OnLeaveRemoveGroups
	}
	r := &Reconciler{discord: d, ak: ak, store: store, log: log, opts: o}
	r.mapping = newMappingCache(o.MappingRefresh, func(ctx context.Context) (*groupmatch.Mapping, error) {
		groups, err := ak.Groups(ctx)
		if err != nil {
			return nil, err
		}
		m := groupmatch.Build(groups, groupmatch.Options{AllowSuperuser: o.AllowSuperuser})
		for _, inv := range m.Invalid() {
			log.Warn("invalid discord_role_id mapping", "group", inv.GroupName, "reason", inv.Reason)
		}
		return m, nil
	}, log)
	return r
}

// Mapping returns the current role→group mapping, fetching it when none is cached.
func (r *Reconciler) Mapping(ctx context.Context) (*groupmatch.Mapping, error) {
	return r.mapping.get(ctx)
}

// RefreshMapping fetches the group mapping now.
func (r *Reconciler) RefreshMapping(ctx context.Context) error {
	_, err := r.mapping.refresh(ctx)
	return err
}

// Target names the user to sync.
type Target struct {
	DiscordID string
	// UserPKs are the Authentik users to sync when the caller knows them: the enrollment hook,
	// whose user's Discord connection is not saved yet, and a full pass, which listed every
	// connection. Empty means: look up the users linked to DiscordID.
	UserPKs []int32
	// Known is the membership when the caller already has it fresh from Discord (a gateway
	// event, a page of the member list); nil means: ask Discord.
	Known *guild.Membership
	// ObservedAt, when set, is when Known was read from Discord, or when the gateway event
	// carrying it arrived. A full pass's pages are seconds old by the time it writes; if
	// another sync of the member has applied a newer view since (a gateway event, a login),
	// the sync is skipped instead of undoing it.
	ObservedAt time.Time
	// Users are linked users read by the caller at ReadAt, moments before the sync: a full
	// pass reads the users it writes in batches. Any user missing here is read afresh, and
	// all of them are when another sync of the member finished after ReadAt.
	Users  map[int32]*authentik.User
	ReadAt time.Time
}

// Plan is what a sync would change for one Discord user.
type Plan struct {
	DiscordID  string
	Membership guild.Membership
	Users      []UserPlan
	// NoUser is set when no Authentik user is linked to the Discord ID.
	NoUser bool
}

// UserPlan is the part of a Plan that concerns one Authentik user.
type UserPlan struct {
	PK          int32
	Username    string
	Add         []GroupChange
	Remove      []GroupChange
	Attributes  []AttrChange
	Name        *NameChange
	AvatarURL   string // the hosted avatar the user will point at
	AvatarError string // why the avatar could not be refreshed
	// AvatarPending is the CDN URL of a new avatar a dry run did not fetch.
	AvatarPending string
	Deactivate    bool // the member left and the grace period is over
	Reactivate    bool // the member is back and the bridge had deactivated the user
	Revoke        bool // sessions and tokens end because a managed group is removed

	// state is what the bridge will remember of the user once the plan is applied;
	// stateChanged says it differs from what it remembers now.
	state        UserState
	stateChanged bool
	// base is the user's attributes as the plan read them, the base of the attribute write.
	base map[string]json.RawMessage
	// avatarHeld is set when the avatar's source failed for good and is left alone for now.
	avatarHeld bool
}

// GroupChange is one membership to add or remove, with the reason for it.
type GroupChange struct {
	Group  groupmatch.Group
	Reason string
}

// AttrChange replaces one owned attribute.
type AttrChange struct {
	Key           string
	Before, After json.RawMessage // Before is nil when the key was absent
}

// NameChange sets the user's display name.
type NameChange struct{ Before, After string }

// Empty reports whether applying the plan would change nothing.
func (p *Plan) Empty() bool {
	for _, u := range p.Users {
		if !u.Empty() {
			return false
		}
	}
	return true
}

// Empty reports whether the plan for this user changes nothing.
func (u *UserPlan) Empty() bool {
	return len(u.Add) == 0 && len(u.Remove) == 0 && len(u.Attributes) == 0 && u.Name == nil &&
		!u.Deactivate && !u.Reactivate && u.AvatarPending == ""
}

// Outcome is what one sync did.
type Outcome struct {
	Plan   *Plan
	Result Result
	Avatar string // URL of the hosted avatar, when there is one
	// AvatarError says why the avatar could not be refreshed; the old one stays in place.
	AvatarError string
	Added       []string // names of the groups joined
	Removed     []string // names of the groups left
	Changes     []Change
}

// merge makes o the outcome of an earlier sync followed by o's.
func (o *Outcome) merge(earlier *Outcome) {
	o.Changes = append(slices.Clip(earlier.Changes), o.Changes...)
	o.Added = append(slices.Clip(earlier.Added), o.Added...)
	o.Removed = append(slices.Clip(earlier.Removed), o.Removed...)
	if len(o.Changes) > 0 && o.Result == ResultUnchanged {
		o.Result = ResultChanged
	}
}

// Sync brings the Authentik users linked to t.DiscordID in line with the guild. With dryRun
// it only computes the plan. Syncs of one Discord user never run at the same time, so two
// triggers that race cannot interleave their writes.
func (r *Reconciler) Sync(ctx context.Context, t Target, trigger string, dryRun bool) (*Outcome, error) {
	start := r.opts.Now()
	unlock, err := r.locks.lock(ctx, t.DiscordID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Taken once the lock is held: a sync that waited for it reads Discord after this.
	locked := r.opts.Now()

	// olderThanPass: t holds a view of the member from before the newest full pass began.
	olderThanPass := func() bool {
		return t.Known != nil && r.beforePass(t.ObservedAt) && !dryRun
	}
	if olderThanPass() {
		// A gateway event that waited in the queue while a pass listed the guild: the pass
		// may have applied a newer view since, and nothing else would repair it.
		t.Known, t.ObservedAt = nil, time.Time{}
	}
	var last recentSync
	if v, ok := r.recent.Load(t.DiscordID); ok && !dryRun {
		last = v.(recentSync)
		if !t.ObservedAt.IsZero() && last.observed.After(t.ObservedAt) {
			return &Outcome{Result: ResultSuperseded}, nil
		}
		if last.finished.After(t.ReadAt) {
			t.Users = nil
		}
	}
	out, err := r.sync(ctx, t, trigger, dryRun)
	if err == nil && olderThanPass() {
		// A pass began while this sync wrote an older view. The pass may have read
		// Authentik before the write and found the member current: read Discord afresh now.
		first := out
		t.Known, t.ObservedAt, t.Users = nil, time.Time{}, nil
		locked = r.opts.Now()
		if out, err = r.sync(ctx, t, trigger, dryRun); out != nil {
			out.merge(first)
		}
	}
	if !dryRun && r.passing.Load() {
		// A sync that failed before writing anything keeps the view the last one applied.
		rs := recentSync{finished: r.opts.Now(), observed: last.observed}
		switch {
		case err != nil && (out == nil || len(out.Changes) == 0):
		case t.Known == nil:
			rs.observed = locked // the sync read the member from Discord itself
		default:
			// A view of unknown age (zero ObservedAt) supersedes nothing: a gateway event
			// may have waited in the queue since before the pass listed the guild.
			rs.observed = t.ObservedAt
		}
		r.recent.Store(t.DiscordID, rs)
	}
	if r.store != nil && !dryRun {
		rec := SyncRecord{
			DiscordID: t.DiscordID,
			Trigger:   trigger,
			At:        start,
			Duration:  r.opts.Now().Sub(start),
			Result:    ResultError,
		}
		if out != nil {
			rec.Result = out.Result
			rec.Changes = len(out.Changes)
			rec.AvatarError = out.AvatarError
			if out.Plan != nil {
				rec.Membership = string(out.Plan.Membership.State)
				for _, u := range out.Plan.Users {
					rec.UserPKs = append(rec.UserPKs, u.PK)
				}
			}
		}
		if err != nil {
			rec.Result = ResultError
			rec.Error = err.Error()
		}
		// A context that already ended must not lose the record of why.
		if serr := r.store.RecordSync(context.WithoutCancel(ctx), rec); serr != nil {
			r.log.Error("record sync", "discord_id", t.DiscordID, "err", serr)
		}
	}
	return out, err
}

func (r *Reconciler) sync(ctx context.Context, t Target, trigger string, dryRun bool) (*Outcome, error) {
	plan, err := r.plan(ctx, t, !dryRun)
	if err != nil {
		return nil, err
	}
	out := &Outcome{Plan: plan, Result: ResultUnchanged}
	for _, u := range plan.Users {
		if u.AvatarError != "" {
			out.AvatarError = u.AvatarError
		}
		if u.AvatarURL != "" {
			out.Avatar = u.AvatarURL
		}
	}
	switch {
	case plan.NoUser:
		out.Result = ResultNoUser
		return out, nil
	case dryRun:
		if !plan.Empty() {
			out.Result = ResultPlanned
		}
		return out, nil
	}
	if !plan.Empty() {
		err = r.apply(ctx, plan, trigger, out)
		if errors.Is(err, errStaleMapping) {
			// A managed group vanished: read the groups again and plan once more, from
			// users read afresh, since part of the first plan may have been written.
			t.Users = nil
			if rerr := r.RefreshMapping(ctx); rerr == nil {
				if plan, err = r.plan(ctx, t, true); err == nil {
					out.Plan = plan
					err = r.apply(ctx, plan, trigger, out)
				}
			}
		}
		if len(out.Changes) > 0 {
			out.Result = ResultChanged
			if r.store != nil {
				if serr := r.store.RecordChanges(context.WithoutCancel(ctx), out.Changes); serr != nil {
					r.log.Error("record audit entries", "discord_id", t.DiscordID, "err", serr)
				}
			}
		}
		if err != nil {
			return out, err
		}
	}
	r.rememberUsers(ctx, plan)
	return out, nil
}

// rememberUsers stores the state of each user whose plan was applied in full.
func (r *Reconciler) rememberUsers(ctx context.Context, plan *Plan) {
	if r.store == nil {
		return
	}
	for _, u := range plan.Users {
		if !u.stateChanged {
			continue
		}
		u.state.UpdatedAt = r.opts.Now().UTC()
		if err := r.store.PutUserState(context.WithoutCancel(ctx), u.state); err != nil {
			r.log.Error("remember user state", "user_pk", u.PK, "err", err)
			r.states.Delete(u.PK)
			continue
		}
		r.states.Store(u.PK, u.state)
	}
}

// userState returns what the bridge remembers of user pk. The states are kept in memory once
// read: every login needs one, and SQLite's single connection would make them queue behind
// the batch writer. Only this process writes them while it serves; a `bridge sync` beside it
// writes its own, which a full pass reads back.
func (r *Reconciler) userState(ctx context.Context, pk int32) (UserState, bool, error) {
	if v, ok := r.states.Load(pk); ok {
		return v.(UserState), true, nil
	}
	st, ok, err := r.store.UserState(ctx, pk)
	if err == nil && ok {
		r.states.Store(pk, st)
	}
	return st, ok, err
}

// Plan reads Discord and Authentik and returns what a sync would change. It writes nothing,
// and fetches no avatar: a new avatar shows as pending.
func (r *Reconciler) Plan(ctx context.Context, t Target) (*Plan, error) {
	return r.plan(ctx, t, false)
}

// plan computes the plan; with hostAvatars it also brings the member's hosted avatar up to
// date in the avatar store (content-addressed, so an unused upload is harmless and collected
// later), so that the plan can point attributes.avatar at it.
func (r *Reconciler) plan(ctx context.Context, t Target, hostAvatars bool) (*Plan, error) {
	if !isSnowflake(t.DiscordID) {
		return nil, fmt.Errorf("discord id %q: not a snowflake", t.DiscordID)
	}
	mapping, err := r.mapping.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("load group mapping: %w", err)
	}
	var ms guild.Membership
	if t.Known != nil {
		ms = *t.Known
	} else {
		ms, err = guild.Lookup(ctx, r.discord, r.opts.GuildID, t.DiscordID)
		if err != nil {
			return nil, fmt.Errorf("look up guild member %s: %w", t.DiscordID, err)
		}
	}

	pks := t.UserPKs
	linked := len(pks) == 0 // the users come from the source's connections
	if linked {
		pks, err = r.ak.UsersByDiscordID(ctx, t.DiscordID)
		if err != nil {
			return nil, err
		}
	}
	plan := &Plan{DiscordID: t.DiscordID, Membership: ms, NoUser: len(pks) == 0}
	for _, pk := range pks {
		u := t.Users[pk]
		if u == nil {
			if u, err = r.ak.User(ctx, pk); err != nil {
				return nil, err
			}
		}
		if err := r.checkOwner(ctx, u, t.DiscordID, linked); err != nil {
			return nil, err
		}
		st := UserState{UserPK: pk, DiscordID: t.DiscordID}
		if r.store != nil {
			if remembered, ok, err := r.userState(ctx, pk); err != nil {
				return nil, err
			} else if ok {
				st = remembered
				st.DiscordID = t.DiscordID
			}
		}
		up := r.planUser(mapping, ms, u, st)
		if ms.State != guild.StateAbsent {
			r.planProfile(ctx, &up, ms, u, hostAvatars)
		}
		plan.Users = append(plan.Users, up)
	}
	return plan, nil
}

// errStaleMapping marks a failure caused by a managed group deleted since the mapping was
// read; the sync is worth retrying with a fresh mapping.
var errStaleMapping = errors.New("group mapping out of date")

// ErrOtherAccount reports a user whose attributes already name another Discord account; the
// bridge refuses to sync it rather than hand one person's roles to another.
var ErrOtherAccount = errors.New("user is linked to another discord account")

// checkOwner refuses to sync a user whose attributes name another Discord account, unless
// Authentik's source connection links the user to discordID: the connection is the truth,
// and a user who re-linked their account must move to the new account's groups.
func (r *Reconciler) checkOwner(ctx context.Context, u *authentik.User, discordID string, linked bool) error {
	raw, ok := u.Attributes["discord"]
	if !ok || linked {
		return nil
	}
	var cur struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(raw, &cur) != nil || len(cur.ID) == 0 || string(cur.ID) == "null" {
		return nil
	}
	// The ID may have been written as a number by hand; compare its digits either way.
	id := strings.Trim(string(cur.ID), `"`)
	if id == discordID {
		return nil
	}
	pks, err := r.ak.UsersByDiscordID(ctx, discordID)
	if err != nil {
		return err
	}
	for _, pk := range pks {
		if pk == u.PK {
			return nil
		}
	}
	return fmt.Errorf("user %d (%s): %w %s, not %s", u.PK, u.Username, ErrOtherAccount, id,
		discordID)
}

// roleIDs are the roles that feed groups: the member's roles plus @everyone, whose ID is the
// guild's, which Discord never lists but every member has.
func (r *Reconciler) roleIDs(ms guild.Membership) []string {
	roles := ms.RoleIDs()
	if ms.State == guild.StateAbsent {
		return roles
	}
	return append(roles, r.opts.GuildID)
}

// DesiredGroups returns the managed groups a member should be in under mapping m.
func (r *Reconciler) DesiredGroups(m *groupmatch.Mapping, ms guild.Membership) map[string]bool {
	return m.Desired(r.roleIDs(ms))
}

func (r *Reconciler) planUser(m *groupmatch.Mapping, ms guild.Membership, u *authentik.User,
	st UserState) UserPlan {
	up := UserPlan{PK: u.PK, Username: u.Username, state: st, base: u.Attributes}
	present := ms.State != guild.StateAbsent
	if present {
		r.planReturn(&up, u)
	} else {
		if r.opts.OnLeave == OnLeaveKeep {
			return up
		}
		r.planLeave(&up, u)
	}

	roles := r.roleIDs(ms)
	desired := m.Desired(roles)
	current := map[string]bool{}
	for _, g := range u.Groups {
		if m.Managed(g) {
			current[g] = true
		}
	}
	for _, g := range m.ManagedGroups() {
		switch {
		case desired[g.UUID] && !current[g.UUID]:
			up.Add = append(up.Add, GroupChange{Group: g, Reason: addReason(m, g, roles)})
		case !desired[g.UUID] && current[g.UUID]:
			up.Remove = append(up.Remove, GroupChange{Group: g, Reason: removeReason(m, g, present)})
		}
	}
	up.Revoke = r.opts.RevokeOnLoss && len(up.Remove) > 0
	if !present {
		r.planLeftAttribute(&up, u)
	}
	return up
}

// planProfile plans the owned attributes of a present member: attributes.discord, the hosted
// avatar in attributes.avatar, and the name.
func (r *Reconciler) planProfile(ctx context.Context, up *UserPlan, ms guild.Membership,
	u *authentik.User, hostAvatars bool) {
	stored, storedOK := storedDiscord(u)
	cur := currentProfile(u, stored, storedOK)
	attr := discordAttribute(ms.Member, ms.RoleIDs())
	attr.AvatarURL = nonEmpty(cur.URL)
	// want is the hash the guild names; the fingerprint keeps it even when the avatar could
	// not be refreshed, so full passes do not read the user again and again while a login
	// or a new avatar still retries.
	want := attr
	if r.opts.Avatars == nil {
		attr.Avatar = nonEmpty(ms.Member.User.Avatar)
		want.Avatar = attr.Avatar
	} else {
		am := avatarMember(ms.Member, r.opts.GuildID)
		src, err := r.opts.Avatars.Source(am)
		attr.Avatar = sourceHash(src, err)
		want.Avatar = attr.Avatar
		r.planAvatar(ctx, up, am, src, err, stored.Avatar, cur, &attr, hostAvatars)
	}
	hash := attrHash(attr)
	if up.avatarHeld {
		hash = attrHash(want)
	}
	if before, ok := u.Attributes["discord"]; !ok || !storedOK || !sameAttribute(stored, attr) {
		attr.SyncedAt = r.opts.Now().UTC().Format(time.RFC3339)
		after, _ := json.Marshal(attr)
		up.Attributes = append(up.Attributes, AttrChange{Key: "discord", Before: before, After: after})
	}
	if attr.AvatarURL != nil {
		up.AvatarURL = *attr.AvatarURL
		after, _ := json.Marshal(*attr.AvatarURL)
		if before := u.Attributes["avatar"]; string(before) != string(after) {
			up.Attributes = append(up.Attributes, AttrChange{Key: "avatar", Before: before, After: after})
		}
	}
	if up.state.AttrHash != hash {
		up.state.AttrHash, up.stateChanged = hash, true
	}
	if r.opts.SetName {
		if name := discord.DisplayName(ms.Member); name != "" && name != u.Name {
			up.Name = &NameChange{Before: u.Name, After: name}
		}
	}
}

// planAvatar brings the hosted avatar of am, made from src (or srcErr), up to date and points
// attr at it. On any failure the avatar the user has stays, hash (storedHash) and URL alike,
// so the next sync tries again and nobody is left without a picture.
func (r *Reconciler) planAvatar(ctx context.Context, up *UserPlan, am avatars.Member,
	src avatars.Source, srcErr error, storedHash *string, cur avatars.Current,
	attr *DiscordAttribute, host bool) {
	keep := func(msg string) {
		up.AvatarError = msg
		attr.Avatar, attr.AvatarURL = storedHash, nonEmpty(cur.URL)
	}
	if srcErr != nil {
		keep(srcErr.Error())
		return
	}
	stale := src.Hash != cur.SourceHash || cur.URL == ""
	if stale {
		if failed, ok := r.badAvatars.Load(src.URL); ok {
			f := failed.(avatarFailure)
			if r.opts.Now().Sub(f.at) < avatarRetryAfter {
				// Nothing can be done about it now, so the user is as current as the bridge
				// can make them: neither a plan nor a full pass should count them as stale.
				keep(f.msg + " (not retried before " +
					f.at.Add(avatarRetryAfter).UTC().Format(time.RFC3339) + ")")
				up.avatarHeld = true
				return
			}
			r.badAvatars.Delete(src.URL)
		}
	}
	if !host {
		if stale {
			up.AvatarPending = src.URL
		}
		return
	}
	res, err := r.opts.Avatars.Sync(ctx, am, cur)
	if err != nil {
		keep(err.Error())
		if !avatars.Retryable(err) {
			// A picture that is broken now stays broken: do not fetch it at every login.
			r.badAvatars.Store(src.URL, avatarFailure{at: r.opts.Now(), msg: err.Error()})
			up.avatarHeld = true
		}
		r.log.Warn("avatar not refreshed; the old one stays", "user_pk", up.PK, "err", err)
		return
	}
	attr.AvatarURL = &res.URL
	if up.state.AvatarKey != res.Key {
		up.state.AvatarKey, up.stateChanged = res.Key, true
	}
}

// avatarRetryAfter is how long a source that failed for good (not an image, 404, too big) is
// left alone before it is fetched again. A new avatar has a new URL and is fetched at once.
const avatarRetryAfter = 10 * time.Minute

// avatarFailure is a source that could not be turned into an avatar.
type avatarFailure struct {
	at  time.Time
	msg string
}

// avatarHash is the hash attributes.discord.avatar names: the guild avatar when it is the
// one in use, else the user's; nil for Discord's default avatar.
func (r *Reconciler) avatarHash(m *discordgo.Member) *string {
	if r.opts.Avatars == nil {
		return nonEmpty(m.User.Avatar)
	}
	return sourceHash(r.opts.Avatars.Source(avatarMember(m, r.opts.GuildID)))
}

// sourceHash is the Discord hash of an avatar source; nil for the default avatar or when the
// member's data names no source.
func sourceHash(src avatars.Source, err error) *string {
	if err != nil || strings.HasPrefix(src.Hash, "default-") {
		return nil
	}
	return &src.Hash
}

func avatarMember(m *discordgo.Member, guildID string) avatars.Member {
	return avatars.Member{UserID: m.User.ID, GuildID: guildID, Discriminator: m.User.Discriminator,
		UserAvatar: m.User.Avatar, GuildAvatar: m.Avatar}
}

// storedDiscord decodes the user's attributes.discord; false when it is absent or not one.
func storedDiscord(u *authentik.User) (DiscordAttribute, bool) {
	var d DiscordAttribute
	raw, ok := u.Attributes["discord"]
	return d, ok && json.Unmarshal(raw, &d) == nil
}

// currentProfile reads what the user's attributes say about the hosted avatar: the URL in
// attributes.avatar and the source it was made from. A user whose stored hash is null but who
// has a URL was given Discord's default avatar, whose source is named by its index.
func currentProfile(u *authentik.User, d DiscordAttribute, ok bool) avatars.Current {
	var cur avatars.Current
	_ = json.Unmarshal(u.Attributes["avatar"], &cur.URL)
	switch {
	case !ok:
	case d.Avatar != nil:
		cur.SourceHash = *d.Avatar
	case cur.URL != "":
		if i, err := avatars.DefaultAvatarIndex(d.ID, d.Discriminator); err == nil {
			cur.SourceHash = fmt.Sprintf("default-%d", i)
		}
	}
	return cur
}

// planLeftAttribute empties attributes.discord.roles of someone who left, so that apps
// reading it do not see roles the person no longer has. The rest of the value stays: it still
// says which Discord account the user was.
func (r *Reconciler) planLeftAttribute(up *UserPlan, u *authentik.User) {
	before, ok := u.Attributes["discord"]
	if !ok {
		return
	}
	var a DiscordAttribute
	if json.Unmarshal(before, &a) != nil || len(a.Roles) == 0 {
		return
	}
	a.Roles = []string{}
	a.SyncedAt = r.opts.Now().UTC().Format(time.RFC3339)
	after, _ := json.Marshal(a)
	up.Attributes = append(up.Attributes, AttrChange{Key: "discord", Before: before, After: after})
}

// planReturn undoes what leaving did, for a member who is (back) in the guild.
func (r *Reconciler) planReturn(up *UserPlan, u *authentik.User) {
	if !up.state.AbsentSince.IsZero() {
		up.state.AbsentSince, up.stateChanged = time.Time{}, true
	}
	if up.state.DeactivatedByBridge {
		up.Reactivate = !u.IsActive
		up.state.DeactivatedByBridge, up.stateChanged = false, true
	}
}

// planLeave notes when a member was first seen absent and, with OnLeaveDeactivate, plans the
// deactivation once the grace period is over.
func (r *Reconciler) planLeave(up *UserPlan, u *authentik.User) {
	now := r.opts.Now().UTC()
	if up.state.AbsentSince.IsZero() {
		up.state.AbsentSince, up.stateChanged = now, true
	}
	if r.opts.OnLeave == OnLeaveDeactivate && u.IsActive &&
		now.Sub(up.state.AbsentSince) >= r.opts.LeaveGrace {
		up.Deactivate = true
		up.state.DeactivatedByBridge, up.stateChanged = true, true
	}
}

// attrHash fingerprints the owned attribute values, without their time stamp.
func attrHash(a DiscordAttribute) string {
	// The URL depends on the avatar store; the hash of the source is what says whether the
	// avatar is current.
	a.SyncedAt, a.AvatarURL = "", nil
	a.Roles = append([]string(nil), a.Roles...)
	sort.Strings(a.Roles)
	b, _ := json.Marshal(a)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

func addReason(m *groupmatch.Mapping, g groupmatch.Group, roles []string) string {
	var feeding []string
	for _, id := range roles {
		for _, uuid := range m.GroupsForRole(id) {
			if uuid == g.UUID {
				feeding = append(feeding, id)
			}
		}
	}
	return "member has discord role " + strings.Join(feeding, ", ")
}

func removeReason(m *groupmatch.Mapping, g groupmatch.Group, present bool) string {
	if !present {
		return "not a member of the guild"
	}
	return "member has none of the roles " + strings.Join(m.RolesForGroup(g.UUID), ", ")
}

// DiscordAttribute is the value the bridge keeps under attributes.discord. Snowflakes are
// strings, since Authentik's own client would turn numbers into float64 and change them.
type DiscordAttribute struct {
	ID            string   `json:"id"`
	Username      string   `json:"username"`
	GlobalName    *string  `json:"global_name"`
	Discriminator string   `json:"discriminator"`
	Nick          *string  `json:"nick"`
	Avatar        *string  `json:"avatar"` // hash of the avatar in use, guild or user
	AvatarURL     *string  `json:"avatar_url,omitempty"`
	Roles         []string `json:"roles"`
	// SyncedAt is when the bridge last changed this value. It is not refreshed by syncs that
	// find nothing to change, so an unchanged member costs no write.
	SyncedAt string `json:"synced_at,omitempty"`
}

func discordAttribute(m *discordgo.Member, roles []string) DiscordAttribute {
	u := m.User
	a := DiscordAttribute{
		ID:            u.ID,
		Username:      u.Username,
		GlobalName:    nonEmpty(u.GlobalName),
		Discriminator: u.Discriminator,
		Nick:          nonEmpty(m.Nick),
		Avatar:        nonEmpty(u.Avatar),
		Roles:         roles,
	}
	if a.Roles == nil {
		a.Roles = []string{}
	}
	return a
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// sameDiscord reports whether the stored attribute already says what want says, ignoring
// when it was written.
func sameDiscord(raw json.RawMessage, want DiscordAttribute) bool {
	var have DiscordAttribute
	if err := json.Unmarshal(raw, &have); err != nil {
		return false
	}
	return sameAttribute(have, want)
}

// sameAttribute is sameDiscord of an attribute already decoded.
func sameAttribute(have, want DiscordAttribute) bool {
	have.SyncedAt = ""
	have.Roles = slices.Clone(have.Roles) // sorted below; the caller's copy stays as it was
	if have.Roles == nil {
		return false
	}
	// The order of roles carries no meaning; an admin's hand edit that reorders them is no
	// reason to write.
	want.Roles = slices.Clone(want.Roles)
	sort.Strings(have.Roles)
	sort.Strings(want.Roles)
	return reflect.DeepEqual(have, want)
}

// apply carries out plan, recording each change in out as it succeeds. Removals go first, so
// that a lost role loses its power even when an addition fails, and one failed step does not
// hold back the others; the failures are returned together and a retry plans the rest again.
func (r *Reconciler) apply(ctx context.Context, plan *Plan, trigger string, out *Outcome) error {
	var errs []error
	for _, u := range plan.Users {
		log := r.log.With("discord_id", plan.DiscordID, "user_pk", u.PK, "username", u.Username)
		rec := func(kind ChangeKind, target, before, after, reason string) {
			out.Changes = append(out.Changes, Change{
				At: r.opts.Now().UTC(), Trigger: trigger, DiscordID: plan.DiscordID,
				UserPK: u.PK, Username: u.Username, Kind: kind, Target: target,
				Before: before, After: after, Reason: reason,
			})
		}
		failed := func(err error) {
			errs = append(errs, err)
		}
		groupFailed := func(err error) {
			if errors.Is(err, authentik.ErrNotFound) {
				// The group was deleted in Authentik after the mapping was read.
				r.mapping.expire()
				err = fmt.Errorf("%w: %w", errStaleMapping, err)
			}
			failed(err)
		}
		for _, g := range u.Remove {
			if err := r.ak.RemoveFromGroup(ctx, g.Group.UUID, u.PK); err != nil {
				groupFailed(err)
				continue
			}
			rec(KindGroupRemove, g.Group.Name, "member", "not a member", g.Reason)
			out.Removed = append(out.Removed, g.Group.Name)
			log.Info("removed user from group", "group", g.Group.Name, "reason", g.Reason)
		}
		if u.Revoke {
			if n, err := r.ak.Revoke(ctx, u.PK, u.Username); err != nil {
				failed(err)
			} else {
				rec(KindRevoke, "sessions and tokens", fmt.Sprint(n), "0", "a managed group was removed")
				log.Info("revoked sessions and tokens", "count", n)
			}
		}
		setActive := func(active bool, msg, reason string) {
			if err := r.ak.SetActive(ctx, u.PK, active); err != nil {
				failed(err)
				return
			}
			rec(KindActive, "is_active", strconv.FormatBool(!active), strconv.FormatBool(active),
				reason)
			log.Info(msg, "reason", reason)
		}
		if u.Deactivate {
			setActive(false, "deactivated user", "left the guild")
		}
		for _, g := range u.Add {
			if err := r.ak.AddToGroup(ctx, g.Group.UUID, u.PK); err != nil {
				groupFailed(err)
				continue
			}
			rec(KindGroupAdd, g.Group.Name, "not a member", "member", g.Reason)
			out.Added = append(out.Added, g.Group.Name)
			log.Info("added user to group", "group", g.Group.Name, "reason", g.Reason)
		}
		if u.Reactivate {
			setActive(true, "reactivated user", "back in the guild")
		}
		if len(u.Attributes) > 0 || u.Name != nil {
			upd := authentik.Update{Attributes: map[string]json.RawMessage{}, Base: u.base}
			for _, a := range u.Attributes {
				upd.Attributes[a.Key] = a.After
			}
			if u.Name != nil {
				upd.Name = &u.Name.After
			}
			if err := r.ak.UpdateUser(ctx, u.PK, upd); err != nil {
				failed(err)
				continue
			}
			for _, a := range u.Attributes {
				reason := "discord profile changed"
				if a.Key == "avatar" {
					reason = "hosted avatar changed"
				}
				rec(KindAttribute, a.Key, string(a.Before), string(a.After), reason)
			}
			if u.Name != nil {
				rec(KindName, "name", u.Name.Before, u.Name.After, "discord display name")
			}
			log.Info("updated user attributes", "attributes", len(u.Attributes),
				"name_changed", u.Name != nil)
		}
	}
	return errors.Join(errs...)
}

// String renders the plan for people, one change a line.
func (p *Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "discord user %s: %s\n", p.DiscordID, p.Membership.State)
	if p.NoUser {
		b.WriteString("  no Authentik user is linked to this Discord account\n")
		return b.String()
	}
	for _, u := range p.Users {
		fmt.Fprintf(&b, "authentik user %s (pk %d):\n", u.Username, u.PK)
		if u.Empty() {
			b.WriteString("  nothing to change\n")
			continue
		}
		for _, g := range u.Add {
			fmt.Fprintf(&b, "  + group %-24s %s\n", g.Group.Name, g.Reason)
		}
		for _, g := range u.Remove {
			fmt.Fprintf(&b, "  - group %-24s %s\n", g.Group.Name, g.Reason)
		}
		for _, a := range u.Attributes {
			before := string(a.Before)
			if before == "" {
				before = "(absent)"
			}
			fmt.Fprintf(&b, "  ~ attributes.%s\n      before: %s\n      after:  %s\n",
				a.Key, before, a.After)
		}
		if u.Name != nil {
			fmt.Fprintf(&b, "  ~ name %q → %q\n", u.Name.Before, u.Name.After)
		}
		if u.AvatarPending != "" {
			fmt.Fprintf(&b, "  ~ avatar would be fetched from %s\n", u.AvatarPending)
		}
		if u.AvatarError != "" {
			fmt.Fprintf(&b, "  ! avatar not refreshed: %s\n", u.AvatarError)
		}
		if u.Revoke {
			b.WriteString("  ! revoke sessions and OAuth tokens\n")
		}
		if u.Deactivate {
			b.WriteString("  ! deactivate (left the guild)\n")
		}
		if u.Reactivate {
			b.WriteString("  ! reactivate (back in the guild)\n")
		}
	}
	return b.String()
}

// keyedMutex serialises work per key without holding a lock per key forever. Waiting for a
// key gives up when the caller's context ends, so syncs queued behind a slow one time out
// instead of piling up.
//
// TODO: the lock is per process. A `bridge sync` run beside `bridge serve`, or several
// replicas once a shared database backs the store, can sync one user at the same time; both
// write the same desired state, but the audit log then records it twice. A lock row in the
// store would serialise them.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	held chan struct{} // holds one token while the key is locked
	refs int
}

func (k *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{held: make(chan struct{}, 1)}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()

	release := func() {
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
	select {
	case e.held <- struct{}{}:
		return func() { <-e.held; release() }, nil
	case <-ctx.Done():
		release()
		return nil, fmt.Errorf("wait for another sync of %s: %w", key, ctx.Err())
	}
}

// isSnowflake reports whether s looks like a Discord ID: 1 to 20 ASCII digits.
func isSnowflake(s string) bool {
	if len(s) == 0 || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// DesiredDiscordAttribute is the attributes.discord value the bridge wants for member m,
// without its time stamp.
func DesiredDiscordAttribute(m *discordgo.Member) DiscordAttribute {
	ms := guild.Membership{State: guild.StateMember, Member: m}
	return discordAttribute(m, ms.RoleIDs())
}
