package snapshot

import (
	"context"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-mesh/sluice/sources"
)

// tracer starts the loop's spans: their names and attributes are here, and
// nowhere else.
type tracer struct{ trace.Tracer }

// sourceUpdate starts the span of a source event.
func (t tracer) sourceUpdate(ctx context.Context, ev sources.Event) trace.Span {
	_, span := t.Start(ctx, "sluice.source.update", trace.WithAttributes(
		attribute.String("sluice.source", ev.Source),
		attribute.Bool("sluice.source.stale", ev.State == nil),
	))
	if ev.State != nil {
		n := 0
		for _, s := range ev.State.Services {
			n += len(s.Instances)
		}
		span.SetAttributes(attribute.Int("sluice.services", len(ev.State.Services)), attribute.Int("sluice.instances", n))
	}
	if ev.Err != nil {
		span.SetStatus(codes.Error, ev.Err.Error())
	}
	return span
}

// build starts the span of a build of every group, or of new groups only.
func (t tracer) build(ctx context.Context, onlyFresh bool) (context.Context, trace.Span) {
	return t.Start(ctx, "sluice.snapshot.build", trace.WithAttributes(attribute.Bool("sluice.only_new_groups", onlyFresh)))
}

// translate starts the span of one group's translation.
func (t tracer) translate(ctx context.Context, group string, services int) trace.Span {
	_, span := t.Start(ctx, "sluice.translate", trace.WithAttributes(
		attribute.String("sluice.group", group), attribute.Int("sluice.services", services)))
	return span
}

// publish starts the span of handing a group's snapshot to the Publisher.
func (t tracer) publish(ctx context.Context, group string, versions map[resource.Type]string) (context.Context, trace.Span) {
	ctx, span := t.Start(ctx, "sluice.publish", trace.WithAttributes(attribute.String("sluice.group", group)))
	for typ, v := range versions {
		span.SetAttributes(attribute.String("sluice.version."+typ[strings.LastIndexByte(typ, '.')+1:], v))
	}
	return ctx, span
}

// spanError marks span as failed with err, if err is not nil.
func spanError(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
}
