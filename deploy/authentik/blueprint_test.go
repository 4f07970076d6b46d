package authentik_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/discord-authentik-bridge/bridge/deploy/authentik"
)

const schemaFile = "testdata/blueprint-schema-2026.2.2.json"

// tag is a YAML node carrying one of Authentik's custom tags, kept unresolved so the tests can
// check what it refers to.
type tag struct {
	Name   string // e.g. "!KeyOf"
	Scalar string // the scalar form's value
	Args   []any  // the sequence form's items
	IsSeq  bool
}

// tree converts a yaml.v3 node into maps, slices, scalars and tags.
func tree(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		return tree(n.Content[0])
	case yaml.AliasNode:
		return tree(n.Alias)
	}
	if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
		t := tag{Name: n.Tag}
		switch n.Kind {
		case yaml.ScalarNode:
			t.Scalar = n.Value
		case yaml.SequenceNode:
			t.IsSeq = true
			for _, c := range n.Content {
				v, err := tree(c)
				if err != nil {
					return nil, err
				}
				t.Args = append(t.Args, v)
			}
		default:
			return nil, fmt.Errorf("line %d: tag %s on a mapping", n.Line, n.Tag)
		}
		return t, nil
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
				return nil, fmt.Errorf("line %d: key is not a string", k.Line)
			}
			if _, dup := m[k.Value]; dup {
				return nil, fmt.Errorf("line %d: key %q given twice", k.Line, k.Value)
			}
			v, err := tree(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[k.Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		s := []any{}
		for _, c := range n.Content {
			v, err := tree(c)
			if err != nil {
				return nil, err
			}
			s = append(s, v)
		}
		return s, nil
	default:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		return v, nil
	}
}

type blueprint struct {
	doc     map[string]any
	context map[string]any
	entries []map[string]any
}

func loadBlueprint(t *testing.T) blueprint {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(authentik.Blueprint, &root); err != nil {
		t.Fatalf("parse blueprint: %v", err)
	}
	v, err := tree(&root)
	if err != nil {
		t.Fatalf("parse blueprint: %v", err)
	}
	doc, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("blueprint is %T, want a mapping", v)
	}
	b := blueprint{doc: doc}
	b.context, _ = doc["context"].(map[string]any)
	list, _ := doc["entries"].([]any)
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			t.Fatalf("entry %d is %T, want a mapping", i, e)
		}
		b.entries = append(b.entries, m)
	}
	if len(b.entries) == 0 {
		t.Fatal("blueprint has no entries")
	}
	return b
}

// stubs resolves tags into plain values the way Authentik would, with fake primary keys and
// the environment empty, so the result can be checked against the JSON schema.
type stubs struct {
	t       *testing.T
	context map[string]any
}

func fakeUUID(s string) string {
	h := sha256.Sum256([]byte(s))
	x := fmt.Sprintf("%x", h[:16])
	return x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

func (s *stubs) plain(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			out[k] = s.plain(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = s.plain(e)
		}
		return out
	case tag:
		return s.resolve(v)
	default:
		return v
	}
}

func (s *stubs) resolve(tg tag) any {
	s.t.Helper()
	switch tg.Name {
	case "!KeyOf":
		return fakeUUID("keyof/" + tg.Scalar)
	case "!Find":
		return fakeUUID(fmt.Sprint("find/", s.plain(tg.Args)))
	case "!Env":
		if tg.IsSeq && len(tg.Args) == 2 {
			return s.plain(tg.Args[1])
		}
		return nil
	case "!Context":
		key, def := tg.Scalar, any(nil)
		if tg.IsSeq {
			key, _ = tg.Args[0].(string)
			if len(tg.Args) > 1 {
				def = s.plain(tg.Args[1])
			}
		}
		if v, ok := s.context[key]; ok {
			return v
		}
		if def == nil {
			s.t.Errorf("!Context %q has no value in the blueprint's context and no default", key)
		}
		return def
	case "!Format":
		format, _ := tg.Args[0].(string)
		args := make([]string, 0, len(tg.Args)-1)
		for _, a := range tg.Args[1:] {
			args = append(args, fmt.Sprintf("%q", fmt.Sprint(s.plain(a))))
		}
		out, err := percentFormat(format, args)
		if err != nil {
			s.t.Errorf("!Format: %v", err)
		}
		return out
	default:
		s.t.Errorf("unknown tag %s", tg.Name)
		return nil
	}
}

// percentFormat applies Python's %-formatting for the %r, %s and %% the templates may use,
// with args already rendered.
func percentFormat(format string, args []string) (string, error) {
	var b strings.Builder
	next := 0
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			b.WriteByte(format[i])
			continue
		}
		if i+1 == len(format) {
			return "", fmt.Errorf("lone %% at the end")
		}
		i++
		switch format[i] {
		case '%':
			b.WriteByte('%')
		case 'r', 's':
			if next == len(args) {
				return "", fmt.Errorf("more placeholders than the %d arguments", len(args))
			}
			b.WriteString(args[next])
			next++
		default:
			return "", fmt.Errorf("unsupported placeholder %%%c", format[i])
		}
	}
	if next != len(args) {
		return "", fmt.Errorf("%d arguments but %d placeholders", len(args), next)
	}
	return b.String(), nil
}

func (b blueprint) plain(t *testing.T) map[string]any {
	t.Helper()
	s := &stubs{t: t, context: map[string]any{}}
	for k, v := range b.context {
		s.context[k] = s.plain(v)
	}
	return s.plain(b.doc).(map[string]any)
}

func loadSchema(t *testing.T) (*jsonschema.Schema, map[string]any) {
	t.Helper()
	raw, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("read schema: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("blueprint-schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("blueprint-schema.json")
	if err != nil {
		t.Fatalf("compile schema: %v", err)
	}
	defs, _ := doc.(map[string]any)["$defs"].(map[string]any)
	return sch, defs
}

func TestBlueprint_Schema(t *testing.T) {
	sch, _ := loadSchema(t)
	plain := loadBlueprint(t).plain(t)

	raw, err := json.Marshal(plain)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("blueprint does not match Authentik's schema:\n%v", err)
	}
}

// The schema leaves additional properties open, so a misspelt attribute would pass it and be
// ignored by Authentik. Every key must be one of the model's fields.
func TestBlueprint_FieldsExist(t *testing.T) {
	_, defs := loadSchema(t)
	for i, e := range loadBlueprint(t).entries {
		model, _ := e["model"].(string)
		def, ok := defs["model_"+model].(map[string]any)
		if !ok {
			t.Errorf("entry %d: model %q is not in the schema", i, model)
			continue
		}
		props, _ := def["properties"].(map[string]any)
		for _, part := range []string{"identifiers", "attrs"} {
			fields, _ := e[part].(map[string]any)
			for k := range fields {
				if _, ok := props[k]; !ok && !(part == "identifiers" && k == "pk") {
					t.Errorf("entry %d (%s): %s.%s is not a field of the model", i, model, part, k)
				}
			}
		}
	}
}

// walkTags calls fn for every tag in v, depth first.
func walkTags(v any, fn func(tag)) {
	switch v := v.(type) {
	case map[string]any:
		for _, e := range v {
			walkTags(e, fn)
		}
	case []any:
		for _, e := range v {
			walkTags(e, fn)
		}
	case tag:
		fn(v)
		for _, a := range v.Args {
			walkTags(a, fn)
		}
	}
}

func TestBlueprint_References(t *testing.T) {
	b := loadBlueprint(t)
	_, defs := loadSchema(t)

	defined := map[string]bool{}
	for i, e := range b.entries {
		walkTags(e, func(tg tag) {
			switch tg.Name {
			case "!KeyOf":
				// Authentik resolves !KeyOf against entries already applied, in file order.
				if !defined[tg.Scalar] {
					t.Errorf("entry %d: !KeyOf %s does not name an earlier entry's id", i, tg.Scalar)
				}
			case "!Find":
				model, _ := tg.Args[0].(string)
				if _, ok := defs["model_"+model]; !ok {
					t.Errorf("entry %d: !Find on unknown model %q", i, model)
				}
				for _, cond := range tg.Args[1:] {
					if pair, ok := cond.([]any); !ok || len(pair) != 2 {
						t.Errorf("entry %d: !Find condition %v is not a [field, value] pair", i, cond)
					}
				}
			case "!Context":
				if _, ok := b.context[tg.Scalar]; !tg.IsSeq && !ok {
					t.Errorf("entry %d: !Context %s is not in the blueprint's context", i, tg.Scalar)
				}
			case "!Env", "!Format":
			default:
				t.Errorf("entry %d: unexpected tag %s", i, tg.Name)
			}
		})
		if id, ok := e["id"].(string); ok {
			if defined[id] {
				t.Errorf("entry %d: id %s used twice", i, id)
			}
			defined[id] = true
		}
	}
}

func find(b blueprint, model, key string, value any) (int, map[string]any) {
	for i, e := range b.entries {
		if e["model"] != model {
			continue
		}
		ids, _ := e["identifiers"].(map[string]any)
		if cmp.Equal(ids[key], value) {
			return i, e
		}
	}
	return -1, nil
}

func attr(e map[string]any, part, key string) any {
	m, _ := e[part].(map[string]any)
	return m[key]
}

func TestBlueprint_Wiring(t *testing.T) {
	b := loadBlueprint(t)
	const (
		policyModel  = "authentik_policies_expression.expressionpolicy"
		bindingModel = "authentik_policies.policybinding"
		flowModel    = "authentik_flows.flow"
		stageBinding = "authentik_flows.flowstagebinding"
	)

	policyIDs := map[string]string{}
	for _, name := range []string{"discord-bridge-gate", "discord-bridge-sync"} {
		i, e := find(b, policyModel, "name", name)
		if i < 0 {
			t.Fatalf("no expression policy named %s", name)
		}
		policyIDs[name], _ = e["id"].(string)
		if _, ok := attr(e, "attrs", "expression").(tag); !ok {
			t.Errorf("%s: expression is not built with !Format", name)
		}
	}

	wantContext := map[string]string{
		"enrollment_flow":            "default-source-enrollment",
		"authentication_flow":        "default-source-authentication",
		"enrollment_login_stage":     "default-source-enrollment-login",
		"authentication_login_stage": "default-source-authentication-login",
		"source_slug":                "discord",
	}
	for k, want := range wantContext {
		if got := b.context[k]; got != want {
			t.Errorf("context %s = %v, want %s", k, got, want)
		}
	}

	flows := []struct{ flowKey, stageKey string }{
		{"enrollment_flow", "enrollment_login_stage"},
		{"authentication_flow", "authentication_login_stage"},
	}
	for _, f := range flows {
		t.Run(f.flowKey, func(t *testing.T) {
			_, flow := find(b, flowModel, "slug", tag{Name: "!Context", Scalar: f.flowKey})
			if flow == nil {
				t.Fatalf("no flow entry identified by !Context %s", f.flowKey)
			}
			if got := attr(flow, "attrs", "policy_engine_mode"); got != "all" {
				t.Errorf("policy_engine_mode = %v, want all", got)
			}
			flowRef := tag{Name: "!KeyOf", Scalar: flow["id"].(string)}

			gate := bindingFor(b, policyIDs["discord-bridge-gate"], flowRef)
			if gate == nil {
				t.Fatalf("gate is not bound to flow %s", flowRef.Scalar)
			}
			if got := attr(gate, "attrs", "failure_result"); got != false {
				t.Errorf("gate binding failure_result = %v, want false (fail closed)", got)
			}

			_, login := find(b, stageBinding, "target", flowRef)
			if login == nil {
				t.Fatalf("no stage binding entry for flow %s", flowRef.Scalar)
			}
			wantStage := tag{Name: "!Find", IsSeq: true, Args: []any{
				"authentik_stages_user_login.userloginstage",
				[]any{"name", tag{Name: "!Context", Scalar: f.stageKey}},
			}}
			if diff := cmp.Diff(wantStage, attr(login, "identifiers", "stage")); diff != "" {
				t.Errorf("stage binding does not find the user login stage (-want +got):\n%s", diff)
			}
			onPlan := attr(login, "attrs", "evaluate_on_plan")
			reEval := attr(login, "attrs", "re_evaluate_policies")
			if onPlan != false || reEval != true {
				t.Errorf("login stage binding: evaluate_on_plan %v, re_evaluate_policies %v; "+
					"want false, true", onPlan, reEval)
			}

			loginRef := tag{Name: "!KeyOf", Scalar: login["id"].(string)}
			sync := bindingFor(b, policyIDs["discord-bridge-sync"], loginRef)
			if sync == nil {
				t.Fatalf("sync is not bound to the login stage binding of %s", flowRef.Scalar)
			}
			if got := attr(sync, "attrs", "failure_result"); got != true {
				t.Errorf("sync binding failure_result = %v, want true", got)
			}
			if attr(sync, "attrs", "negate") == true || attr(gate, "attrs", "negate") == true {
				t.Error("a binding negates its policy")
			}
		})
	}
}

func bindingFor(b blueprint, policyID string, target tag) map[string]any {
	for _, e := range b.entries {
		if e["model"] != "authentik_policies.policybinding" {
			continue
		}
		if cmp.Equal(attr(e, "identifiers", "policy"), tag{Name: "!KeyOf", Scalar: policyID}) &&
			cmp.Equal(attr(e, "identifiers", "target"), target) {
			return e
		}
	}
	return nil
}

// expression returns a policy's !Format template and the context keys of its arguments.
func expression(t *testing.T, name string) (string, []string) {
	t.Helper()
	_, e := find(loadBlueprint(t), "authentik_policies_expression.expressionpolicy", "name", name)
	if e == nil {
		t.Fatalf("no policy %s", name)
	}
	f, ok := attr(e, "attrs", "expression").(tag)
	if !ok || f.Name != "!Format" || len(f.Args) < 1 {
		t.Fatalf("%s: expression is not a !Format sequence", name)
	}
	template, _ := f.Args[0].(string)
	var keys []string
	for _, a := range f.Args[1:] {
		c, ok := a.(tag)
		if !ok || c.Name != "!Context" {
			t.Fatalf("%s: !Format argument %v is not a !Context", name, a)
		}
		keys = append(keys, c.Scalar)
	}
	return template, keys
}

var returnLine = regexp.MustCompile(`(?m)^\s*return\b(.*)$`)

func TestExpressions_Static(t *testing.T) {
	for _, name := range []string{"discord-bridge-gate", "discord-bridge-sync"} {
		t.Run(name, func(t *testing.T) {
			template, keys := expression(t, name)

			wantKeys := []string{"bridge_url", "bridge_secret", "source_slug"}
			if diff := cmp.Diff(wantKeys, keys); diff != "" {
				t.Errorf("!Format arguments (-want +got):\n%s", diff)
			}
			// Python's % would fail on any other percent sign, or put values in the wrong place.
			if got := strings.Count(template, "%"); got != 3 || strings.Count(template, "%r") != 3 {
				t.Errorf("template has %d percent signs; want exactly the three %%r", got)
			}
			for i, v := range []string{"BRIDGE_URL = %r", "BRIDGE_SECRET = %r", "SOURCE_SLUG = %r"} {
				if !strings.Contains(template, v) {
					t.Errorf("template lacks %q (argument %d)", v, i+1)
				}
			}
			url := strings.Index(template, "BRIDGE_URL = %r")
			secret := strings.Index(template, "BRIDGE_SECRET = %r")
			if url > secret || secret > strings.Index(template, "SOURCE_SLUG = %r") {
				t.Error("placeholders are not in argument order")
			}
			if !strings.Contains(template, `"Authorization": "Bearer " + BRIDGE_SECRET`) ||
				!strings.Contains(template, "timeout=") {
				t.Error("the call lacks the bearer header or a timeout")
			}
		})
	}

	gate, _ := expression(t, "discord-bridge-gate")
	gateWants := []string{`"/v1/authentik/gate"`, "ak_message(", `"goauthentik.io/sources/connection"`}
	for _, want := range gateWants {
		if !strings.Contains(gate, want) {
			t.Errorf("gate expression lacks %s", want)
		}
	}

	sync, _ := expression(t, "discord-bridge-sync")
	for _, want := range []string{`"/v1/authentik/sync"`, `"pending_user"`, `"user_pk": user_pk`} {
		if !strings.Contains(sync, want) {
			t.Errorf("sync expression lacks %s", want)
		}
	}
	returns := returnLine.FindAllStringSubmatch(sync, -1)
	if len(returns) == 0 {
		t.Error("sync expression has no return")
	}
	for _, r := range returns {
		if strings.TrimSpace(r[1]) != "True" {
			t.Errorf("sync expression has %q; every return must be True", strings.TrimSpace(r[0]))
		}
	}
}

// python runs testdata/harness.py with one request, or skips when python3 is missing.
func python(t *testing.T, req map[string]any) map[string]any {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found: the expressions were not compiled or run; " +
			"install python3 to check them")
	}
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), py, "testdata/harness.py")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("harness: %v\n%s", err, stderr.String())
	}
	var answer map[string]any
	if err := json.Unmarshal(out, &answer); err != nil {
		t.Fatalf("harness answer %q: %v", out, err)
	}
	return answer
}

// Values chosen to break naive quoting: %r must turn each into a valid Python literal.
var renderArgs = map[string]string{
	"bridge_url":    "http://bridge.test/",
	"bridge_secret": `s3cr'et"with\backslash`,
	"source_slug":   "discord",
}

func request(t *testing.T, name, mode string, extra map[string]any) map[string]any {
	t.Helper()
	template, keys := expression(t, name)
	args := []any{}
	for _, k := range keys {
		v := renderArgs[k]
		if o, ok := extra["override_"+k]; ok {
			v = o.(string)
		}
		args = append(args, v)
	}
	req := map[string]any{"template": template, "args": args, "mode": mode}
	for k, v := range extra {
		if !strings.HasPrefix(k, "override_") {
			req[k] = v
		}
	}
	return req
}

func TestExpressions_Python(t *testing.T) {
	for _, name := range []string{"discord-bridge-gate", "discord-bridge-sync"} {
		t.Run(name+"/compile", func(t *testing.T) {
			answer := python(t, request(t, name, "compile", nil))
			if answer["ok"] != true {
				t.Errorf("expression does not compile as Authentik wraps it: %v", answer["error"])
			}
		})
	}

	t.Run("discord-bridge-sync/never returns False", func(t *testing.T) {
		facts := python(t, request(t, "discord-bridge-sync", "inspect", nil))
		for _, r := range facts["returns"].([]any) {
			if r != "True" {
				t.Errorf("sync returns %v; every return must be True", r)
			}
		}
		if facts["raises"].(float64) != 0 {
			t.Errorf("sync has %v raise statements", facts["raises"])
		}
		if facts["last"] != "return True" {
			t.Errorf("sync's last statement is %q, want return True (no falling off to None)",
				facts["last"])
		}
		// Only constants, one try/except Exception, and the final return at the top level:
		// nothing outside the try can raise.
		wantTop := []any{"Assign", "Assign", "Assign", "Try", "Return"}
		if diff := cmp.Diff(wantTop, facts["top"]); diff != "" {
			t.Errorf("sync top level (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]any{"Exception"}, facts["handlers"]); diff != "" {
			t.Errorf("sync's try must catch Exception (-want +got):\n%s", diff)
		}
	})
}

// discordContext is what Authentik's source flows put in the context for a Discord login.
func discordContext() map[string]any {
	return map[string]any{
		"source":                            map[string]any{"slug": "discord"},
		"goauthentik.io/sources/connection": map[string]any{"identifier": "80351110224678912"},
		"oauth_userinfo":                    map[string]any{"id": "80351110224678912", "username": "nelly"},
		"pending_user":                      map[string]any{"pk": 42},
	}
}

func otherSource() map[string]any {
	return withContext(func(c map[string]any) { c["source"] = map[string]any{"slug": "github"} })
}

func withContext(change func(map[string]any)) map[string]any {
	c := discordContext()
	change(c)
	return c
}

const unavailable = "Sign-in with Discord is unavailable right now"

func TestGate_Behaviour(t *testing.T) {
	tests := []struct {
		name      string
		extra     map[string]any
		want      bool
		message   string // substring of the single ak_message; "" for none
		wantCalls int
		wantID    string
	}{
		{name: "member", extra: map[string]any{
			"response": map[string]any{"status": 200, "json": map[string]any{"allowed": true, "message": ""}},
		}, want: true, wantCalls: 1, wantID: "80351110224678912"},
		{name: "not a member", extra: map[string]any{
			"response": map[string]any{"status": 200, "json": map[string]any{
				"allowed": false, "reason": "not_member", "message": "Join the server first."}},
		}, message: "Join the server first.", wantCalls: 1},
		{name: "not a member without message", extra: map[string]any{
			"response": map[string]any{"status": 200, "json": map[string]any{"allowed": false}},
		}, message: "not a member", wantCalls: 1},
		{name: "allowed as a string is not allowed", extra: map[string]any{
			"response": map[string]any{"status": 200, "json": map[string]any{"allowed": "true"}},
		}, message: unavailable, wantCalls: 1},
		{name: "allowed with an error status", extra: map[string]any{
			"response": map[string]any{"status": 503, "json": map[string]any{"allowed": true}},
		}, message: unavailable, wantCalls: 1},
		{name: "wrong secret", extra: map[string]any{
			"response": map[string]any{"status": 401, "json": map[string]any{"message": "Unauthorized"}},
		}, message: unavailable, wantCalls: 1},
		{name: "html error page", extra: map[string]any{
			"response": map[string]any{"status": 502, "text": "<html>Bad Gateway</html>"},
		}, message: unavailable, wantCalls: 1},
		{name: "bridge down", extra: map[string]any{"raise": "connection refused"},
			message: unavailable, wantCalls: 1},
		{name: "profile only", extra: map[string]any{
			"context":  withContext(func(c map[string]any) { delete(c, "goauthentik.io/sources/connection") }),
			"response": map[string]any{"status": 200, "json": map[string]any{"allowed": true}},
		}, want: true, wantCalls: 1, wantID: "80351110224678912"},
		{name: "no discord id", extra: map[string]any{
			"context": withContext(func(c map[string]any) {
				delete(c, "goauthentik.io/sources/connection")
				delete(c, "oauth_userinfo")
			}),
		}, message: unavailable},
		{name: "broken profile", extra: map[string]any{
			"context": withContext(func(c map[string]any) {
				delete(c, "goauthentik.io/sources/connection")
				c["oauth_userinfo"] = []any{"not", "a", "dict"}
			}),
		}, message: unavailable},
		{name: "other source", extra: map[string]any{
			"context": otherSource(),
		}, want: true},
		{name: "not configured", extra: map[string]any{"override_bridge_url": ""},
			message: unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			extra := map[string]any{"context": discordContext()}
			for k, v := range tt.extra {
				extra[k] = v
			}
			answer := python(t, request(t, "discord-bridge-gate", "run", extra))

			if answer["escaped"] != nil {
				t.Fatalf("exception escaped the gate: %v", answer["escaped"])
			}
			if answer["result"] != tt.want {
				t.Errorf("result = %v, want %v", answer["result"], tt.want)
			}
			messages, _ := answer["messages"].([]any)
			switch {
			case tt.message == "" && len(messages) != 0:
				t.Errorf("messages = %v, want none", messages)
			case tt.message != "" &&
				(len(messages) != 1 || !strings.Contains(fmt.Sprint(messages[0]), tt.message)):
				t.Errorf("messages = %v, want one containing %q", messages, tt.message)
			}
			calls, _ := answer["calls"].([]any)
			if len(calls) != tt.wantCalls {
				t.Fatalf("%d calls to the bridge, want %d", len(calls), tt.wantCalls)
			}
			if len(calls) == 1 {
				checkCall(t, calls[0].(map[string]any), "/v1/authentik/gate")
			}
			if tt.wantID != "" {
				body := calls[0].(map[string]any)["json"]
				if diff := cmp.Diff(map[string]any{"discord_id": tt.wantID}, body); diff != "" {
					t.Errorf("gate body (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func checkCall(t *testing.T, call map[string]any, path string) {
	t.Helper()
	if got, want := call["url"], "http://bridge.test"+path; got != want {
		t.Errorf("url = %v, want %s", got, want)
	}
	headers, _ := call["headers"].(map[string]any)
	if got, want := headers["Authorization"], "Bearer "+renderArgs["bridge_secret"]; got != want {
		t.Errorf("Authorization = %v, want %s", got, want)
	}
	if call["timeout"] == nil {
		t.Error("call has no timeout")
	}
}

func TestSync_Behaviour(t *testing.T) {
	tests := []struct {
		name      string
		extra     map[string]any
		wantCalls int
	}{
		{name: "synced", extra: map[string]any{
			"response": map[string]any{"status": 200, "json": map[string]any{"status": "synced"}},
		}, wantCalls: 1},
		{name: "bridge error", extra: map[string]any{"response": map[string]any{"status": 500, "text": "oops"}},
			wantCalls: 1},
		{name: "bridge down", extra: map[string]any{"raise": "timed out"}, wantCalls: 1},
		{name: "no user", extra: map[string]any{
			"context": withContext(func(c map[string]any) { delete(c, "pending_user") }),
		}},
		{name: "broken context", extra: map[string]any{
			"context": withContext(func(c map[string]any) {
				delete(c, "goauthentik.io/sources/connection")
				c["oauth_userinfo"] = 7
			}),
		}},
		{name: "context missing entirely", extra: map[string]any{"context": nil}},
		{name: "other source", extra: map[string]any{
			"context": otherSource(),
		}},
		{name: "not configured", extra: map[string]any{"override_bridge_secret": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			extra := map[string]any{"context": discordContext()}
			for k, v := range tt.extra {
				extra[k] = v
			}
			answer := python(t, request(t, "discord-bridge-sync", "run", extra))

			if answer["escaped"] != nil {
				t.Fatalf("exception escaped the sync: %v", answer["escaped"])
			}
			if answer["result"] != true {
				t.Errorf("result = %v, want True", answer["result"])
			}
			if messages, _ := answer["messages"].([]any); len(messages) != 0 {
				t.Errorf("sync showed messages %v", messages)
			}
			calls, _ := answer["calls"].([]any)
			if len(calls) != tt.wantCalls {
				t.Fatalf("%d calls to the bridge, want %d", len(calls), tt.wantCalls)
			}
			if len(calls) == 1 {
				call := calls[0].(map[string]any)
				checkCall(t, call, "/v1/authentik/sync")
				want := map[string]any{"discord_id": "80351110224678912", "user_pk": float64(42)}
				if diff := cmp.Diff(want, call["json"]); diff != "" {
					t.Errorf("sync body (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestBlueprint_EmbeddedMatchesFile(t *testing.T) {
	onDisk, err := os.ReadFile(authentik.BlueprintName)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, authentik.Blueprint) {
		t.Error("embedded blueprint differs from the file")
	}
	if !slices.Contains(strings.Split(string(onDisk), "\n"), "version: 1") {
		t.Error("blueprint does not declare version: 1")
	}
}
