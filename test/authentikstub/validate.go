package authentikstub

import (
	"bytes"
	"compress/gzip"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"regexp"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// The two schemas bracket the releases the bridge supports: the one shipped inside the Go client
// module (newest) and the oldest supported release. Both are byte-identical gzip copies of the
// originals, so the package works from any working directory.
//
//go:embed testdata/openapi-2026.8.0.yaml.gz testdata/openapi-2026.2.2.yml.gz
var schemaFiles embed.FS

// apiSchema is one Authentik release's OpenAPI document and its router, loaded at most once per
// process because parsing takes about half a second.
type apiSchema struct {
	release string
	file    string

	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

var apiSchemas = []*apiSchema{
	{release: "2026.8.0", file: "testdata/openapi-2026.8.0.yaml.gz"},
	{release: "2026.2.2", file: "testdata/openapi-2026.2.2.yml.gz"},
}

// loadSchemas parses every schema (in parallel on first use) and reports the first failure.
func loadSchemas() error {
	var wg sync.WaitGroup
	for _, sc := range apiSchemas {
		wg.Go(func() { sc.load() })
	}
	wg.Wait()

	for _, sc := range apiSchemas {
		if sc.err != nil {
			return sc.err
		}
	}
	return nil
}

func (sc *apiSchema) load() {
	sc.once.Do(func() {
		sc.doc, sc.router, sc.err = parseSchema(sc.file)
		if sc.err != nil {
			sc.err = fmt.Errorf("load authentik %s schema: %w", sc.release, sc.err)
		}
	})
}

func parseSchema(file string) (*openapi3.T, routers.Router, error) {
	raw, err := schemaFiles.ReadFile(file)
	if err != nil {
		return nil, nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("gunzip: %w", err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, nil, fmt.Errorf("gunzip: %w", err)
	}

	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	// The 2026.8 document carries one example that does not match its own schema, so examples
	// are left out; the structure itself must be sound for the router to be trusted.
	if err := doc.Validate(context.Background(), openapi3.DisableExamplesValidation()); err != nil {
		return nil, nil, fmt.Errorf("validate: %w", err)
	}
	// The documents declare the relative server "/api/v3", which the router prefixes to every
	// path, so requests are matched on their full path.
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, nil, fmt.Errorf("router: %w", err)
	}
	return doc, router, nil
}

// uuidPattern is the textual form Django's UUIDField accepts in JSON and URLs (hyphenated).
var uuidPattern = regexp.MustCompile(
	`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// schemaOptions check the string formats the schemas use beyond kin-openapi's built-in date
// and date-time, per validation so that no global state of kin-openapi changes under the code
// being tested, and keep error texts to one line instead of dumping schema and value.
var schemaOptions = []openapi3.SchemaValidationOption{
	openapi3.DisableSchemaErrorDetails(),
	openapi3.WithStringFormatValidators(map[string]openapi3.StringFormatValidator{
		"uuid": openapi3.NewCallbackValidator(func(v string) error {
			if !uuidPattern.MatchString(v) {
				return errors.New("not a UUID")
			}
			return nil
		}),
		// Authentik serves "" for a user without an address, so only non-empty values are checked.
		"email": openapi3.NewCallbackValidator(func(v string) error {
			if v == "" {
				return nil
			}
			if _, err := mail.ParseAddress(v); err != nil {
				return errors.New("not an email address")
			}
			return nil
		}),
	}),
}

// filterOptions returns the kin-openapi options every check uses. Authentication is checked by
// the stub itself before validation (Authentik answers 403 first), so the schema's security
// requirement is accepted here.
func filterOptions() *openapi3filter.Options {
	return &openapi3filter.Options{
		AuthenticationFunc:      openapi3filter.NoopAuthenticationFunc,
		SkipSettingDefaults:     true,
		SchemaValidationOptions: schemaOptions,
	}
}

// schemaCheck is the outcome of validating one request against one schema; input is kept so the
// response can be validated against the same route.
type schemaCheck struct {
	schema *apiSchema
	input  *openapi3filter.RequestValidationInput
	err    error
}

// checkRequest validates a request (whose body was already read into body) against every schema.
// rt and params are the stub's own routing of it, or nil for a request it does not serve. An
// operation the schema lacks is a violation too.
func checkRequest(r *http.Request, body []byte, rt *route, params map[string]string) []schemaCheck {
	checks := make([]schemaCheck, 0, len(apiSchemas))
	for _, sc := range apiSchemas {
		checks = append(checks, checkRequestWith(sc, r, body, rt, params))
	}
	return checks
}

func checkRequestWith(
	sc *apiSchema, r *http.Request, body []byte, rt *route, params map[string]string,
) schemaCheck {
	chk := schemaCheck{schema: sc}
	if sc.err != nil {
		chk.err = sc.err
		return chk
	}

	req := r.Clone(r.Context())
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }

	route, params, err := findRoute(sc, req, rt, params)
	if err != nil {
		chk.err = fmt.Errorf("no such operation in the schema: %w", err)
		return chk
	}
	chk.input = &openapi3filter.RequestValidationInput{
		Request:    req,
		PathParams: params,
		Route:      route,
		Options:    filterOptions(),
	}
	chk.err = openapi3filter.ValidateRequest(req.Context(), chk.input)
	return chk
}

// findRoute looks the stub's route up in the schema directly: the generic router tries the
// document's thousand paths one regular expression at a time, which dominated the cost of a
// validated request. Requests the stub does not serve go through that router.
func findRoute(
	sc *apiSchema, req *http.Request, rt *route, params map[string]string,
) (*routers.Route, map[string]string, error) {
	if rt == nil {
		return sc.router.FindRoute(req)
	}
	path := strings.TrimPrefix(rt.template, strings.TrimSuffix(apiPrefix, "/"))
	item := sc.doc.Paths.Value(path)
	if item == nil {
		return nil, nil, routers.ErrPathNotFound
	}
	op := item.GetOperation(rt.method)
	if op == nil {
		return nil, nil, routers.ErrMethodNotAllowed
	}
	route := &routers.Route{
		Spec: sc.doc, Path: path, PathItem: item, Method: rt.method, Operation: op,
	}
	return route, params, nil
}

// checkResponse validates a response against the route the request matched in that schema.
func checkResponse(chk schemaCheck, status int, header http.Header, body []byte) error {
	if chk.input == nil {
		return nil
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: chk.input,
		Status:                 status,
		Header:                 header,
		Options:                filterOptions(),
	}
	in.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(chk.input.Request.Context(), in)
}

// validationBody shapes a request validation failure the way Django REST framework reports
// serializer errors: a list of messages under the offending field, or under non_field_errors.
func validationBody(err error) map[string]any {
	msg := err.Error()
	field := "non_field_errors"

	var reqErr *openapi3filter.RequestError
	if errors.As(err, &reqErr) && reqErr.Parameter != nil {
		field = reqErr.Parameter.Name
	}
	var schemaErr *openapi3.SchemaError
	if errors.As(err, &schemaErr) {
		if ptr := schemaErr.JSONPointer(); len(ptr) > 0 && field == "non_field_errors" {
			field = ptr[0]
		}
		if schemaErr.Reason != "" {
			msg = schemaErr.Reason
		}
	}
	return map[string]any{field: []string{msg}}
}
