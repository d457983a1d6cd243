package bpf

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// libxdp's defaults for programs without XDP_RUN_CONFIG metadata.
const (
	DefaultPriority = 50
)

// RunConfig is libxdp's per-program run configuration: the priority that
// orders programs in a dispatcher (lower runs first) and the verdicts on
// which the dispatcher goes on to the next program (chain-call actions).
type RunConfig struct {
	Priority  int
	ProceedOn Actions
}

// DefaultRunConfig is what libxdp assumes without metadata: priority 50,
// continue on XDP_PASS.
func DefaultRunConfig() RunConfig {
	return RunConfig{Priority: DefaultPriority, ProceedOn: Actions{XDPPass}}
}

type runConfigJSON struct {
	Priority  int      `json:"priority"`
	ProceedOn []string `json:"proceedOn"`
}

// MarshalJSON writes the verdicts by name (pass, drop...).
func (rc RunConfig) MarshalJSON() ([]byte, error) {
	return json.Marshal(runConfigJSON{rc.Priority, rc.ProceedOn.Names(HookXDP)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (rc *RunConfig) UnmarshalJSON(b []byte) error {
	var j runConfigJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	as, err := ParseActions(HookXDP, strings.Join(j.ProceedOn, ","))
	if err != nil && len(j.ProceedOn) > 0 {
		return err
	}
	*rc = RunConfig{Priority: j.Priority, ProceedOn: as}
	return nil
}

// Section names libxdp versions have used for XDP_RUN_CONFIG.
var runConfigSections = []string{".xdp_run_config", "xdp_run_config", ".data.xdp_run_config"}

// parseRunConfigs reads XDP_RUN_CONFIG metadata from BTF. The format is
// libxdp's: in a data section named .xdp_run_config, a variable
// _<function> of an anonymous struct whose members are pointers to arrays;
// the array length is the value (as in BTF-defined maps):
//
//	struct {
//		__uint(priority, 10);
//		__uint(XDP_PASS, 1);
//	} XDP_RUN_CONFIG(my_func);
//
// Starting from libxdp's defaults, "priority" sets the priority and each
// XDP_<ACTION> member enables (non-zero) or disables (zero) continuing after
// that verdict.
func parseRunConfigs(spec *btf.Spec) (map[string]RunConfig, error) {
	out := map[string]RunConfig{}
	for _, secName := range runConfigSections {
		var sec *btf.Datasec
		if err := spec.TypeByName(secName, &sec); err != nil {
			continue
		}
		for _, vs := range sec.Vars {
			v, ok := vs.Type.(*btf.Var)
			if !ok || !strings.HasPrefix(v.Name, "_") {
				continue
			}
			fn := strings.TrimPrefix(v.Name, "_")
			st, ok := btf.UnderlyingType(v.Type).(*btf.Struct)
			if !ok {
				return nil, fmt.Errorf("XDP_RUN_CONFIG for %s: %s is not a struct", fn, v.Name)
			}
			rc := DefaultRunConfig()
			mask := rc.ProceedOn.XDPMask()
			for _, m := range st.Members {
				val, err := btfMapValue(m.Type)
				if err != nil {
					return nil, fmt.Errorf("XDP_RUN_CONFIG for %s: member %s: %w", fn, m.Name, err)
				}
				if m.Name == "priority" {
					rc.Priority = int(val)
					continue
				}
				act, err := ParseAction(HookXDP, m.Name)
				if err != nil || !strings.HasPrefix(m.Name, "XDP_") {
					return nil, fmt.Errorf("XDP_RUN_CONFIG for %s: unknown member %q (want priority or XDP_<ACTION>)", fn, m.Name)
				}
				if val != 0 {
					mask |= 1 << uint(act)
				} else {
					mask &^= 1 << uint(act)
				}
			}
			rc.ProceedOn = ActionsFromXDPMask(mask)
			out[fn] = rc
		}
	}
	return out, nil
}

// btfMapValue decodes __uint(name, value): a pointer to an array of value
// elements.
func btfMapValue(t btf.Type) (uint32, error) {
	ptr, ok := btf.UnderlyingType(t).(*btf.Pointer)
	if !ok {
		return 0, fmt.Errorf("want a pointer (declare it with __uint), got %v", t)
	}
	arr, ok := btf.UnderlyingType(ptr.Target).(*btf.Array)
	if !ok {
		return 0, fmt.Errorf("want a pointer to an array (declare it with __uint), got %v", ptr.Target)
	}
	return arr.Nelems, nil
}
