package web

import (
	"context"
	"strings"
	"time"

	"github.com/discord-authentik-bridge/bridge/avatars"
	"github.com/discord-authentik-bridge/bridge/discord"
	"github.com/discord-authentik-bridge/bridge/reconcile"
)

// Status is what the admin page reads from the running bridge and asks of it. cmd/bridge
// implements it over the reconciler, the controller, the store, the gateway and the clients;
// tests use a fake. Methods that need Discord or Authentik take ctx and may fail; Health must
// answer from what is already known (the bridge's own store included) without waiting on
// either, because /metrics calls it on every scrape.
type Status interface {
	// Mapping describes the role→group mapping with the guild's roles resolved.
	Mapping(ctx context.Context) (*MappingView, error)
	// Search finds Discord accounts by ID, name or Authentik username.
	Search(ctx context.Context, q string, limit int) (*SearchResult, error)
	// Member describes one Discord account, with a live dry plan of its sync.
	Member(ctx context.Context, discordID string) (*MemberView, error)
	// Activity returns audit entries, newest first.
	Activity(ctx context.Context, f reconcile.ChangeFilter) ([]reconcile.Change, error)
	// Health reports the state of every part without waiting on an upstream.
	Health(ctx context.Context) Health
	// SyncMember syncs one Discord account now; with dryRun it only plans.
	SyncMember(ctx context.Context, discordID, trigger string, dryRun bool) (*reconcile.Outcome, error)
	// PreviewAll runs a full pass that plans every stale user and applies nothing.
	PreviewAll(ctx context.Context) (*reconcile.PassReport, error)
	// RequestFullPass asks the controller for a full pass soon; it does not wait for it.
	RequestFullPass()
}

// Role is a Discord role ID resolved against the guild's roles.
type Role struct {
	ID       string
	Name     string // empty when the guild has no such role
	Color    int    // RGB, 0 for none
	Position int
	Known    bool // the guild has the role (as of the last refresh of the roles)
	Managed  bool // the role belongs to an integration, such as a bot
	Everyone bool // the @everyone role, whose ID is the guild's
	// Groups are the names of the managed groups the role feeds.
	Groups []string
}

// MappedGroup is one managed group with the roles that feed it.
type MappedGroup struct {
	UUID  string
	Name  string
	Roles []Role
	// Members is how many members of the last full pass hold one of the roles; -1 when no
	// pass has run yet.
	Members int
	// Missing are the IDs among Roles that the guild does not have. The group stays managed,
	// but nobody holds such a role, so it loses every member the role fed.
	Missing []string
}

// InvalidEntry is a group whose discord_role_id the bridge refuses, with the reason.
type InvalidEntry struct {
	GroupUUID string
	GroupName string
	Reason    string
	Value     string // the raw attribute value, shortened
}

// UnknownRole is a role ID a managed group names that the guild does not have (deleted, or a
// typo). Unlike an InvalidEntry, its groups are still managed.
type UnknownRole struct {
	RoleID string
	Groups []string // names of the groups it was meant to feed
}

// MappingView is the Mapping tab.
type MappingView struct {
	Groups      []MappedGroup
	UnusedRoles []Role // guild roles no managed group uses, highest first
	// Invalid are the refused groups, which are not managed.
	Invalid []InvalidEntry
	// UnknownRoles are the mapped roles the guild does not have; each of their groups is
	// among Groups with the role in its Missing.
	UnknownRoles []UnknownRole
	// RolesFetched is when the guild's roles were last read; zero means names are unknown.
	RolesFetched time.Time
	MappingAge   time.Duration
}

// LinkedUser is an Authentik user linked to a Discord account.
type LinkedUser struct {
	PK       int32
	Username string // empty when Authentik could not be asked
}

// SearchHit is one Discord account found by a search.
type SearchHit struct {
	Entry reconcile.Entry
	// Users are the Authentik users linked to the account, in the order of Entry.UserPKs.
	Users []LinkedUser
}

// Name is how the page names the account; see MemberName.
func (h SearchHit) Name() string {
	names := make([]string, 0, len(h.Users))
	for _, u := range h.Users {
		names = append(names, u.Username)
	}
	return MemberName(h.Entry.DiscordID, h.Entry.Username, names)
}

// MemberName is how every page names a Discord account: by its Discord username while the
// bridge knows it, else by the usernames of the Authentik users linked to it (a former member
// is still known there), else by its ID.
func MemberName(discordID, discordUsername string, authentikUsernames []string) string {
	if discordUsername != "" {
		return discordUsername
	}
	var known []string
	for _, u := range authentikUsernames {
		if u != "" {
			known = append(known, u)
		}
	}
	if len(known) > 0 {
		return strings.Join(known, ", ")
	}
	return "Discord ID " + discordID
}

// SearchResult is the Members tab's answer.
type SearchResult struct {
	// Hits come exact matches of the query (Discord ID, Discord or Authentik username) first,
	// then in alphabetical order of their names.
	Hits []SearchHit
	// More is how many further accounts matched beyond the page's limit.
	More int
	// DirectoryReady is false before the first full pass, when only exact IDs and Authentik
	// usernames can be found.
	DirectoryReady bool
	// AuthentikSearched says usernames were looked up in Authentik; AuthentikError says why
	// that failed.
	AuthentikSearched bool
	AuthentikError    string
	// Unlinked are Authentik users whose username matched but who are linked to no Discord
	// account the bridge knows of.
	Unlinked []string
}

// MemberUser is one Authentik user linked to a member, as the member page shows it.
type MemberUser struct {
	PK       int32
	Username string
	Name     string // the display name in Authentik; empty when it could not be read
	// AvatarURL is the hosted avatar the user points at (or will after the sync); empty for
	// none.
	AvatarURL string
	// GroupsNow are the names of every Authentik group the user is in; GroupsAfter what the
	// `groups` claim will hold after the sync (unmanaged groups as they are, managed groups
	// as desired). Nil when Authentik could not be read.
	GroupsNow   []string
	GroupsAfter []string
}

// MemberView is one member's page.
type MemberView struct {
	DiscordID string
	// Entry is what the last full pass saw; nil when it did not see the account.
	Entry *reconcile.Entry
	// State is the live membership: member, pending or absent; empty when Discord could not
	// be asked.
	State       string
	Username    string
	DisplayName string
	Nick        string
	// LastUsername and LastDisplayName are the Discord names the bridge last wrote into a
	// linked user's attributes.discord. They are set only when Discord did not describe the
	// account now (it left the guild, or Discord could not be asked).
	LastUsername    string
	LastDisplayName string
	Roles           []Role   // the member's Discord roles, highest first
	Desired         []string // names of the managed groups the roles call for
	LastSync        *reconcile.SyncRecord
	// Plan is a live dry run of the sync; PlanError says why there is none.
	Plan      *reconcile.Plan
	PlanError string
	Users     []MemberUser
	Recent    []reconcile.Change
}

// Name is how the page names the member; see MemberName.
func (v *MemberView) Name() string {
	names := make([]string, 0, len(v.Users))
	for _, u := range v.Users {
		names = append(names, u.Username)
	}
	return MemberName(v.DiscordID, v.Username, names)
}

// NotLinked reports whether the live plan found no Authentik user linked to the account, so
// that there is nothing to sync. It is false when there is no plan: a link may exist.
func (v *MemberView) NotLinked() bool { return v.Plan != nil && v.Plan.NoUser }

// GatewayHealth is the gateway session as the page shows it.
type GatewayHealth struct {
	Enabled bool
	discord.GatewayStatus
}

// PassHealth is the newest full pass.
type PassHealth struct {
	Running  bool
	Interval time.Duration // 0: passes run only when an admin asks
	// Last is the newest finished pass; nil before the first.
	Last *reconcile.PassReport
	Err  string
}

// AuthentikHealth is the newest probe of Authentik's API.
type AuthentikHealth struct {
	URL       string
	Reachable bool
	Checked   time.Time // zero before the first probe
	Err       string
}

// Health is the Health tab and the source of the scrape-time metrics.
type Health struct {
	Version   string
	Started   time.Time
	Ready     []string // reasons the bridge is not ready; empty when it is
	Gateway   GatewayHealth
	LastEvent time.Time
	Pass      PassHealth
	Queue     reconcile.QueueStats
	Discord   discord.Stats
	Avatars   avatars.Stats
	// AvatarStore names the store: local or s3.
	AvatarStore string
	Authentik   AuthentikHealth
	// MappingLoaded is false until the group mapping was read once; MappingAge is its age.
	MappingLoaded bool
	MappingAge    time.Duration
	Managed       int // managed groups, including those fed by a role the guild lacks
	Invalid       int // refused mapping entries, which are not managed
	// UnknownRoles counts the mapped role IDs the guild does not have, and UnknownGroups the
	// managed groups that name one.
	UnknownRoles  int
	UnknownGroups int
	RolesFetched  time.Time
	RolesError    string
}
