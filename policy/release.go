package policy

import "time"

// Subset is a named selection of a service's instances: those whose
// metadata has every one of Labels (ServicePolicy spec.subsets). Routes
// and splits send traffic to subsets by name.
type Subset struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
}

// Matches reports whether an instance with metadata md is in the subset.
func (s Subset) Matches(md map[string]string) bool {
	for k, v := range s.Labels {
		if got, ok := md[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// WeightedSubset is one subset's share of a split, in percent. The
// weights of a split add up to 100.
type WeightedSubset struct {
	Subset string `json:"subset"`
	Weight uint32 `json:"weight"`
}

// Mirror copies Percent of the requests to Subset, as shadow traffic: the
// copies' answers are discarded (Envoy only).
type Mirror struct {
	Subset  string  `json:"subset"`
	Percent float64 `json:"percent"`
}

// Fault injects delays and aborts into a share of requests, for drills.
// At least one of Delay and Abort is set.
type Fault struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay holds Percent of the requests for Duration before sending
// them on.
type FaultDelay struct {
	Percent  float64       `json:"percent"`
	Duration time.Duration `json:"duration"`
}

// FaultAbort answers Percent of the requests itself, with HTTPStatus
// (200-599) or, for gRPC calls, GRPCStatus (a gRPC status code, 1-16);
// exactly one is set (not 0).
type FaultAbort struct {
	Percent    float64 `json:"percent"`
	HTTPStatus uint32  `json:"httpStatus,omitempty"`
	GRPCStatus uint32  `json:"grpcStatus,omitempty"`
}
