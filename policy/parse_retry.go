package policy

import (
	"math"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
)

var retryOnNames = func() []string {
	names := make([]string, len(retryOnOrder))
	for i, r := range retryOnOrder {
		names[i] = string(r)
	}
	return names
}()

// retry reads a retry block; service reports whether it is at the service
// (or mesh) level, where retryBudget is allowed.
func (p *parser) retry(n *yaml.Node, path string, service bool) (*RetrySpec, *RetryBudget) {
	known := []string{"attempts", "perTryTimeout", "retryOn", "retriableStatusCodes", "backoff", "idempotencyHeader"}
	if service {
		known = append(known, "retryBudget")
	}
	perService := func(key string) string {
		if key == "retryBudget" {
			return "retryBudget applies to the whole service: set it in the service's spec.retry"
		}
		return ""
	}
	r := &RetrySpec{}
	var budget *RetryBudget
	var retryOnLine, codesLine int
	hasStatusCodes := false
	ok := true
	if !p.fields(n, path, known, perService, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "attempts":
			c, cok := p.count32(v, fp, 0, maxRetryAttempts)
			r.Attempts, ok = &c, ok && cok
		case "perTryTimeout":
			d, dok := p.duration(v, fp, maxDuration)
			r.PerTryTimeout, ok = &d, ok && dok
		case "retryOn":
			retryOnLine = v.Line
			var rok bool
			r.RetryOn, rok = p.retryOn(v, fp)
			hasStatusCodes = slices.Contains(r.RetryOn, RetryOnRetriableStatusCodes)
			ok = ok && rok
		case "retriableStatusCodes":
			codesLine = v.Line
			var cok bool
			r.RetriableStatusCodes, cok = p.statusCodes(v, fp)
			ok = ok && cok
		case "backoff":
			b, bok := p.backoff(v, fp)
			r.Backoff, ok = &b, ok && bok
		case "idempotencyHeader":
			h, hok := p.headerName(v, fp)
			r.IdempotencyHeader, ok = &h, ok && hok
		case "retryBudget":
			var bok bool
			budget, bok = p.retryBudget(v, fp)
			ok = ok && bok
		}
	}) {
		return nil, nil
	}
	if hasStatusCodes && codesLine == 0 {
		p.Errorf(retryOnLine, path+".retryOn", "%s needs retriableStatusCodes in the same retry block", RetryOnRetriableStatusCodes)
		ok = false
	}
	if codesLine > 0 && !hasStatusCodes && retryOnLine > 0 {
		p.Errorf(codesLine, path+".retriableStatusCodes", "applies only when retryOn in the same retry block lists %s", RetryOnRetriableStatusCodes)
		ok = false
	} else if codesLine > 0 && retryOnLine == 0 {
		p.Errorf(codesLine, path+".retriableStatusCodes", "needs retryOn listing %s in the same retry block", RetryOnRetriableStatusCodes)
		ok = false
	}
	if !ok {
		return nil, nil
	}
	return r, budget
}

func (p *parser) retryOn(n *yaml.Node, path string) ([]RetryOn, bool) {
	items, ok := p.Seq(n, path)
	if !ok {
		return nil, false
	}
	if len(items) == 0 {
		p.Errorf(n.Line, path, "list at least one retry condition (to turn retries off, set attempts: 0)")
		return nil, false
	}
	seen := map[RetryOn]bool{}
	for i, it := range items {
		fp := strictyaml.Index(path, i)
		s, sok := p.enum(it, fp, "retry condition", retryOnNames)
		if !sok {
			ok = false
			continue
		}
		if seen[RetryOn(s)] {
			p.Errorf(it.Line, fp, "%s is listed twice", s)
			ok = false
			continue
		}
		seen[RetryOn(s)] = true
	}
	var out []RetryOn
	for _, r := range retryOnOrder {
		if seen[r] {
			out = append(out, r)
		}
	}
	return out, ok
}

func (p *parser) statusCodes(n *yaml.Node, path string) ([]uint32, bool) {
	items, ok := p.Seq(n, path)
	if !ok {
		return nil, false
	}
	if len(items) == 0 {
		p.Errorf(n.Line, path, "list at least one HTTP status code")
		return nil, false
	}
	var out []uint32
	for i, it := range items {
		fp := strictyaml.Index(path, i)
		c, cok := p.count32(it, fp, 100, 599)
		if !cok {
			ok = false
			continue
		}
		if slices.Contains(out, c) {
			p.Errorf(it.Line, fp, "%d is listed twice", c)
			ok = false
			continue
		}
		out = append(out, c)
	}
	slices.Sort(out)
	return out, ok
}

// backoff reads {base, max}. An omitted base is DefaultBackoffBase; an
// omitted max is DefaultBackoffMaxFactor times the base (as in Envoy),
// capped at the longest duration allowed.
func (p *parser) backoff(n *yaml.Node, path string) (Backoff, bool) {
	var b Backoff
	ok := true
	var baseLine, maxLine int
	if !p.fields(n, path, []string{"base", "max"}, nil, func(key string, v *yaml.Node) {
		d, dok := p.duration(v, strictyaml.Join(path, key), maxDuration)
		ok = ok && dok
		if key == "base" {
			b.Base, baseLine = d, v.Line
		} else {
			b.Max, maxLine = d, v.Line
		}
	}) {
		return b, false
	}
	if !ok {
		return b, false
	}
	if baseLine == 0 {
		b.Base = DefaultBackoffBase
	}
	if maxLine == 0 {
		b.Max = max(b.Base, min(DefaultBackoffMaxFactor*b.Base, maxDuration))
	}
	if b.Base > b.Max {
		if baseLine == 0 {
			p.Errorf(maxLine, path+".max", "max (%s) is shorter than the default base (%s); set base too", fmtDuration(b.Max), fmtDuration(b.Base))
		} else {
			p.Errorf(baseLine, path+".base", "base (%s) is longer than max (%s)", fmtDuration(b.Base), fmtDuration(b.Max))
		}
		return b, false
	}
	return b, true
}

func (p *parser) retryBudget(n *yaml.Node, path string) (*RetryBudget, bool) {
	b := &RetryBudget{Enabled: true, BudgetPercent: DefaultRetryBudgetPercent, MinRetryConcurrency: DefaultMinRetryConcurrency}
	ok := true
	if !p.fields(n, path, []string{"budgetPercent", "minRetryConcurrency"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "budgetPercent":
			f, fok := p.percent(v, fp, false)
			b.BudgetPercent, ok = f, ok && fok
		case "minRetryConcurrency":
			c, cok := p.count32(v, fp, 1, math.MaxUint32)
			b.MinRetryConcurrency, ok = c, ok && cok
		}
	}) {
		return nil, false
	}
	return b, ok
}
