package authentikstub

import "strings"

// attrIndex finds the users whose attributes hold a given string at one path, so that a
// filtered user list looks at those users alone. A full pass of the bridge sends such a list
// for every few users it changes; scanning 100,000 users each time made the stand-in, not the
// bridge, the slowest part of the pass. (Authentik scans its table; the answers are the same.)
type attrIndex struct {
	path  []string
	byVal map[string]map[int32]bool
	valOf map[int32]string // the indexed value of each user that has a string there
	dirty map[int32]bool   // users whose attributes changed since they were indexed
}

// attrsChanged marks a user's attributes as changed (or the user as gone) for every index.
// Every write of u.attrs and every removal of a user calls it. Caller holds s.mu.
func (s *Server) attrsChanged(pk int32) {
	for _, idx := range s.attrIdx {
		idx.dirty[pk] = true
	}
}

// attrCandidates returns the only users that can pass f, when f is one key with a string
// value or a list of strings; ok is false when the filter needs a scan. Caller holds s.mu.
func (s *Server) attrCandidates(f attrFilter) (map[int32]*user, bool) {
	if len(f) != 1 {
		return nil, false
	}
	t := f[0]
	wants := t.strs
	if str, ok := t.want.(string); ok && !t.in {
		wants = map[string]bool{str: true}
	}
	if wants == nil {
		return nil, false
	}
	key := strings.Join(t.path, "__")
	idx := s.attrIdx[key]
	if idx == nil {
		idx = &attrIndex{path: t.path, byVal: map[string]map[int32]bool{},
			valOf: map[int32]string{}, dirty: map[int32]bool{}}
		for pk := range s.users {
			idx.dirty[pk] = true
		}
		s.attrIdx[key] = idx
	}
	for pk := range idx.dirty {
		idx.reindex(pk, s.users[pk])
	}
	clear(idx.dirty)

	out := map[int32]*user{}
	for w := range wants {
		for pk := range idx.byVal[w] {
			if u := s.users[pk]; u != nil {
				out[pk] = u
			}
		}
	}
	return out, true
}

// reindex puts one user (nil when deleted) in the index afresh.
func (idx *attrIndex) reindex(pk int32, u *user) {
	if old, ok := idx.valOf[pk]; ok {
		delete(idx.byVal[old], pk)
		delete(idx.valOf, pk)
	}
	if u == nil {
		return
	}
	doc, ok := decodeAttrs(u.attrs)
	if !ok {
		return
	}
	v, ok := attrTerm{path: idx.path}.lookup(doc)
	str, isStr := v.(string)
	if !ok || !isStr {
		return
	}
	if idx.byVal[str] == nil {
		idx.byVal[str] = map[int32]bool{}
	}
	idx.byVal[str][pk] = true
	idx.valOf[pk] = str
}
