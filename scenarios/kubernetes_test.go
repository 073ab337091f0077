package scenarios

import (
	"context"
	"strings"
	"testing"
)

// TestKubernetesStepsNeedAKubernetesLab pins, without root or a lab, that
// the YAML example loads and that Kubernetes steps in a plain lab are
// refused up front, naming the step.
func TestKubernetesStepsNeedAKubernetesLab(t *testing.T) {
	s, err := Load("examples/kubernetes-scale-up.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Lab.Kubernetes == nil || s.Steps[1].Kubectl[0] != "scale" || s.Steps[1].Expect.Running["app=web"] != 10 {
		t.Fatalf("example loaded as %+v", s)
	}
	if err := s.checkKubernetes(); err != nil {
		t.Fatal(err)
	}
	s.Lab.Kubernetes = nil
	res := Runner{}.Run(context.Background(), s, "never-made")
	if res.Passed || len(res.Failures) != 1 || !strings.Contains(res.Failures[0], "steps[0]: apply, kubectl, running, podRestarts and podEvents need a Kubernetes lab") {
		t.Fatalf("a plain lab with Kubernetes steps: %v", res.Failures)
	}
}
