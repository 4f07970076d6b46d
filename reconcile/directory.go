package reconcile

import (
	"sort"
	"strings"
)

// Entry is what the bridge knows of one Discord account from the last full pass: the member
// (if in the guild) and the Authentik users linked to it.
type Entry struct {
	DiscordID  string
	Username   string
	GlobalName string
	Nick       string
	Roles      []string
	Pending    bool
	InGuild    bool
	UserPKs    []int32
}

// directory is the member list of the last full pass, for search on the status page. It is
// replaced as a whole, so readers never see a half-built one.
type directory struct {
	entries map[string]Entry
	order   []string // discord IDs sorted by username
}

// Directory returns the entries of the last full pass, or nil before the first one.
func (r *Reconciler) Directory() map[string]Entry {
	d := r.dir.Load()
	if d == nil {
		return nil
	}
	return d.entries
}

// Search returns up to limit entries whose Discord ID, username, global name or nickname
// contains q (case-insensitive), and those linked to one of userPKs.
func (r *Reconciler) Search(q string, userPKs []int32, limit int) []Entry {
	d := r.dir.Load()
	if d == nil {
		return nil
	}
	q = strings.ToLower(strings.TrimSpace(q))
	want := map[int32]bool{}
	for _, pk := range userPKs {
		want[pk] = true
	}
	var out []Entry
	for _, id := range d.order {
		e := d.entries[id]
		if matches(e, q) || linkedTo(e, want) {
			out = append(out, e)
			if len(out) == limit {
				break
			}
		}
	}
	return out
}

func matches(e Entry, q string) bool {
	if q == "" {
		return false
	}
	for _, s := range []string{e.DiscordID, e.Username, e.GlobalName, e.Nick} {
		if strings.Contains(strings.ToLower(s), q) {
			return true
		}
	}
	return false
}

func linkedTo(e Entry, pks map[int32]bool) bool {
	for _, pk := range e.UserPKs {
		if pks[pk] {
			return true
		}
	}
	return false
}

// setDirectory records the members and links a full pass read.
func (r *Reconciler) setDirectory(members map[string]liteMember, linked map[string][]int32) {
	d := &directory{entries: make(map[string]Entry, len(members))}
	for id, m := range members {
		d.entries[id] = Entry{DiscordID: id, InGuild: true, Pending: m.pending, Nick: m.nick,
			Username: m.username, GlobalName: m.globalName, Roles: m.roles, UserPKs: linked[id]}
	}
	for id, pks := range linked {
		if _, ok := d.entries[id]; !ok {
			d.entries[id] = Entry{DiscordID: id, UserPKs: pks}
		}
	}
	for id := range d.entries {
		d.order = append(d.order, id)
	}
	sort.Slice(d.order, func(i, j int) bool {
		a, b := d.entries[d.order[i]], d.entries[d.order[j]]
		if a.Username != b.Username {
			return a.Username < b.Username
		}
		return a.DiscordID < b.DiscordID
	})
	r.dir.Store(d)
}
