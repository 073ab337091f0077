package k8s

import (
	"fmt"
	"strings"
)

// ENIConfigCRD defines ENIConfig (crd.k8s.amazonaws.com/v1alpha1,
// cluster-scoped), the object custom networking reads: spec.subnet and
// spec.securityGroups. The real VPC CNI's manifest carries the same
// definition; a lab applies this one for every CNI before aws-node, so
// ENIConfigs can exist when aws-node starts.
const ENIConfigCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: eniconfigs.crd.k8s.amazonaws.com}
spec:
  group: crd.k8s.amazonaws.com
  scope: Cluster
  names: {kind: ENIConfig, listKind: ENIConfigList, plural: eniconfigs, singular: eniconfig}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            properties:
              subnet: {type: string}
              securityGroups: {type: array, items: {type: string}}
          status: {type: object}
`

// ENIConfigManifest is one ENIConfig object.
func ENIConfigManifest(name, subnet string, groups []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: crd.k8s.amazonaws.com/v1alpha1\nkind: ENIConfig\nmetadata: {name: %q}\nspec:\n  subnet: %q\n", name, subnet)
	if len(groups) > 0 {
		b.WriteString("  securityGroups:\n")
		for _, g := range groups {
			fmt.Fprintf(&b, "  - %q\n", g)
		}
	}
	return b.String()
}
