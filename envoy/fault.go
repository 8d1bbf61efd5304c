package envoy

import (
	"time"

	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// FaultFilterName is the HTTP fault-injection filter, which Envoy and
// gRPC's xDS client both run (gRFC A33).
const FaultFilterName = "envoy.filters.http.fault"

// FaultFilter is the fault filter as a connection manager runs it: with
// no faults of its own, so that only routes carrying a FaultConfig (in
// their typed_per_filter_config under FaultFilterName) inject any.
func FaultFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       FaultFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: MustAny(&faultv3.HTTPFault{})},
	}
}

// Fault is what a route injects: a delay of DelayPercent of its requests
// by Delay, and an abort of AbortPercent of them with HTTPStatus or
// GRPCStatus. A zero percent leaves that part out.
type Fault struct {
	DelayPercent float64
	Delay        time.Duration
	AbortPercent float64
	HTTPStatus   uint32
	GRPCStatus   uint32
}

// FaultConfig is a route's fault-filter configuration.
func FaultConfig(f Fault) *anypb.Any {
	hf := &faultv3.HTTPFault{}
	if f.DelayPercent > 0 {
		hf.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(f.Delay)},
			Percentage:         FractionalPercent(f.DelayPercent),
		}
	}
	if f.AbortPercent > 0 {
		hf.Abort = &faultv3.FaultAbort{Percentage: FractionalPercent(f.AbortPercent)}
		if f.GRPCStatus != 0 {
			hf.Abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: f.GRPCStatus}
		} else {
			hf.Abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: f.HTTPStatus}
		}
	}
	return MustAny(hf)
}
