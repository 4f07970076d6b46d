package reconcile

import (
	"context"
	"time"
)

// Store keeps what the bridge remembers between runs: the outcome of the last sync of each
// Discord user and the audit log of every change applied. The SQLite implementation lives in
// reconcile/sqlitestore; the interface is kept small so another database can serve several
// replicas later.
type Store interface {
	// RecordSync stores the outcome of one sync, replacing the previous one for that user.
	RecordSync(ctx context.Context, r SyncRecord) error
	// RecordChanges appends applied changes to the audit log.
	RecordChanges(ctx context.Context, cs []Change) error
	// LastSync returns the newest outcome recorded for a Discord user.
	LastSync(ctx context.Context, discordID string) (SyncRecord, bool, error)
	// Changes returns audit entries, newest first.
	Changes(ctx context.Context, f ChangeFilter) ([]Change, error)
	// UserState returns what the bridge remembers of one Authentik user.
	UserState(ctx context.Context, pk int32) (UserState, bool, error)
	// UserStates returns every remembered user, for a full pass.
	UserStates(ctx context.Context) (map[int32]UserState, error)
	// PutUserState stores s, replacing what was remembered of s.UserPK.
	PutUserState(ctx context.Context, s UserState) error
	// AddUserStates stores, in one transaction, the states of ss whose users it remembers
	// nothing about, and leaves the others as they are: what a full pass learned from its
	// listing is older than whatever a sync stored meanwhile.
	AddUserStates(ctx context.Context, ss []UserState) error
	Close() error
}

// UserState is what the bridge remembers of one Authentik user between syncs.
type UserState struct {
	UserPK    int32
	DiscordID string
	// AttrHash fingerprints the owned attributes the bridge last wrote, without their time
	// stamps; a full pass compares it instead of reading every user.
	AttrHash  string
	AvatarKey string // the hosted avatar the user's attributes point at, for garbage collection
	// AbsentSince is when the member was first seen outside the guild; zero while a member.
	AbsentSince time.Time
	// DeactivatedByBridge is set when the bridge deactivated the user on leaving, so that
	// re-joining reactivates only those, never users an admin deactivated.
	DeactivatedByBridge bool
	UpdatedAt           time.Time
}

// Result says how a sync ended.
type Result string

const (
	ResultUnchanged Result = "unchanged" // Authentik already matched the guild
	ResultChanged   Result = "changed"   // the plan was applied
	ResultPlanned   Result = "planned"   // dry run: the plan was computed, not applied
	ResultNoUser    Result = "no_user"   // no Authentik user is linked to the Discord ID
	// ResultSuperseded: a full pass's view of the member was older than what another sync
	// applied meanwhile, so the pass left the member alone. It is not recorded.
	ResultSuperseded Result = "superseded"
	ResultError      Result = "error"
)

// SyncRecord is the outcome of one sync of one Discord user.
type SyncRecord struct {
	DiscordID  string
	UserPKs    []int32
	Membership string // guild.State of the member when the sync ran
	Trigger    string
	Result     Result
	Error      string
	// AvatarError says why the avatar could not be refreshed; the sync itself may have worked.
	AvatarError string
	Changes     int
	At          time.Time
	Duration    time.Duration
}

// Change is one applied modification of Authentik, as kept in the audit log.
type Change struct {
	ID        int64
	At        time.Time
	Trigger   string // what asked for the sync: "hook", "cli", "gateway", "full_pass", "admin"
	DiscordID string
	UserPK    int32
	Username  string
	Kind      ChangeKind
	Target    string // group name, or attribute key
	Before    string
	After     string
	Reason    string // why the bridge decided so, in words an admin understands
}

// ChangeKind names what a Change modified.
type ChangeKind string

const (
	KindGroupAdd    ChangeKind = "group_add"
	KindGroupRemove ChangeKind = "group_remove"
	KindAttribute   ChangeKind = "attribute"
	KindName        ChangeKind = "name"
	KindActive      ChangeKind = "active"
	KindRevoke      ChangeKind = "revoke"
)

// ChangeFilter selects audit entries. Zero fields do not filter.
type ChangeFilter struct {
	DiscordID string
	UserPK    int32
	Kind      ChangeKind
	Before    int64 // only entries with an ID below this, for paging
	Limit     int   // default 50
}
