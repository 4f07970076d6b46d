package config

import (
	"errors"
	"fmt"
	"strings"
)

// parseAppRoles reads "role=g1,g2;role2=g3". Empty entries (a trailing ";") are skipped. Every
// broken entry is reported, each naming its place in the value, so a typo in one role does not
// hide another.
func parseAppRoles(raw string) ([]AppRole, error) {
	var roles []AppRole
	var errs []error
	seen := map[string]bool{}
	for i, entry := range strings.Split(raw, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		label := fmt.Sprintf("entry %d %q", i+1, entry)
		name, groups, ok := strings.Cut(entry, "=")
		if !ok {
			errs = append(errs, fmt.Errorf(
				"%s has no \"=\": write role=group,group;role2=group", label))
			continue
		}
		r := AppRole{Name: strings.TrimSpace(name)}
		for _, g := range strings.Split(groups, ",") {
			r.Groups = append(r.Groups, strings.TrimSpace(g))
		}
		for _, msg := range roleProblems(r, seen) {
			errs = append(errs, errors.New(label+": "+msg))
		}
		roles = append(roles, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return roles, nil
}

// roleProblems checks one role; seen holds the names of the roles before it.
func roleProblems(r AppRole, seen map[string]bool) []string {
	var out []string
	switch {
	case r.Name == "":
		out = append(out, "empty role name")
	case seen[r.Name]:
		out = append(out, fmt.Sprintf("role %q is given twice", r.Name))
	}
	seen[r.Name] = true

	if len(r.Groups) == 0 || len(r.Groups) == 1 && r.Groups[0] == "" {
		return append(out, "no groups after \"=\"")
	}
	groups := map[string]bool{}
	for _, g := range r.Groups {
		switch {
		case g == "":
			out = append(out, "empty group name")
		case groups[g]:
			out = append(out, fmt.Sprintf("group %q listed twice", g))
		}
		groups[g] = true
	}
	return out
}

// checkAppRoles applies the parser's checks to roles built by hand.
func checkAppRoles(roles []AppRole) []error {
	var errs []error
	seen := map[string]bool{}
	for i, r := range roles {
		for _, msg := range roleProblems(r, seen) {
			errs = append(errs, varErrorf("BRIDGE_APP_ROLES", "role %d %q: %s", i+1, r.Name, msg))
		}
	}
	return errs
}

// formatAppRoles writes roles back in the syntax parseAppRoles reads.
func formatAppRoles(roles []AppRole) string {
	parts := make([]string, len(roles))
	for i, r := range roles {
		parts[i] = r.Name + "=" + strings.Join(r.Groups, ",")
	}
	return strings.Join(parts, ";")
}
