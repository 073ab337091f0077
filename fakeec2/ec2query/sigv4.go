package ec2query

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vpclab/vpclab/fakeec2/model"
)

// sigV4Auth is a parsed SigV4 Authorization header.
type sigV4Auth struct {
	keyID, date, region, service, terminator string
	signedHeaders                            []string
	signature                                string
}

// parseSigV4 reads "AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/
// aws4_request, SignedHeaders=a;b, Signature=hex".
func parseSigV4(h string) (*sigV4Auth, error) {
	algo, rest, _ := strings.Cut(h, " ")
	if algo != "AWS4-HMAC-SHA256" {
		return nil, model.Errorf("IncompleteSignature", "Unsupported AWS 'algorithm': '%s'. The only supported algorithm is AWS4-HMAC-SHA256.", algo)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[k] == "" {
			return nil, model.Errorf("IncompleteSignature", "Authorization header requires '%s' parameter. Authorization=%s", k, h)
		}
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 {
		return nil, model.Errorf("IncompleteSignature", "Credential should have five parts (AKID/date/region/service/aws4_request), not '%s'.", fields["Credential"])
	}
	return &sigV4Auth{keyID: scope[0], date: scope[1], region: scope[2], service: scope[3], terminator: scope[4],
		signedHeaders: strings.Split(fields["SignedHeaders"], ";"), signature: fields["Signature"]}, nil
}

// checkAuth applies what EC2 checks of a request's signature. In every
// mode a request signed for another region is refused (this server serves
// one region, as an EC2 endpoint does). In strict mode the whole signature
// is verified against the configured credentials: scope (region, service,
// date, terminator), time, signed Host, body hash and the HMAC.
func (s *Server) checkAuth(r *http.Request, body []byte) (keyID string, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if s.opts.Strict {
			return "", model.Errorf("AuthFailure", "AWS was not able to validate the provided access credentials")
		}
		return "", nil
	}
	a, err := parseSigV4(h)
	if err != nil {
		if s.opts.Strict {
			return "", err
		}
		return "", nil
	}
	if a.region != s.region.Name() {
		return "", model.Errorf("SignatureDoesNotMatch", "Credential should be scoped to a valid region, not '%s'. (This fakeec2 serves %s; use that region, or start it with --region %s.)", a.region, s.region.Name(), a.region)
	}
	if !s.opts.Strict {
		return a.keyID, nil
	}
	return a.keyID, verifySigV4(r, body, a, s.opts.Credentials, s.now())
}

// verifySigV4 checks a parsed signature as EC2 does.
func verifySigV4(r *http.Request, body []byte, a *sigV4Auth, creds map[string]string, now time.Time) error {
	if a.service != "ec2" {
		return model.Errorf("SignatureDoesNotMatch", "Credential should be scoped to correct service: 'ec2'. ")
	}
	if a.terminator != "aws4_request" {
		return model.Errorf("SignatureDoesNotMatch", "Credential should be scoped with a valid terminator: 'aws4_request', not '%s'. ", a.terminator)
	}
	secret, ok := creds[a.keyID]
	if !ok {
		return model.Errorf("AuthFailure", "AWS was not able to validate the provided access credentials")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil {
		return model.Errorf("IncompleteSignature", "Authorization header requires existence of a valid 'X-Amz-Date' header.")
	}
	if a.date != amzDate[:8] {
		return model.Errorf("SignatureDoesNotMatch", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.", a.date, amzDate[:8], amzDate)
	}
	if d := now.Sub(t); d > 15*time.Minute || d < -15*time.Minute {
		return model.Errorf("RequestExpired", "Request has expired. Timestamp date is %s.", amzDate)
	}
	if !slices.Contains(a.signedHeaders, "host") {
		return model.Errorf("IncompleteSignature", "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
	}
	sum := sha256.Sum256(body)
	payload := hex.EncodeToString(sum[:])
	if claimed := r.Header.Get("X-Amz-Content-Sha256"); claimed != "" && claimed != payload {
		// UNSIGNED-PAYLOAD included: EC2 signs what it receives.
		return model.Errorf("SignatureDoesNotMatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
	}
	var ch strings.Builder
	for _, h := range a.signedHeaders {
		var v string
		switch h {
		case "host":
			v = r.Host
		case "content-length":
			v = strconv.FormatInt(r.ContentLength, 10)
		default:
			v = strings.Join(r.Header.Values(h), ",")
		}
		ch.WriteString(h + ":" + strings.Join(strings.Fields(v), " ") + "\n")
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	canonical := strings.Join([]string{r.Method, path, canonicalQuery(r.URL.Query()), ch.String(), strings.Join(a.signedHeaders, ";"), payload}, "\n")
	ch2 := sha256.Sum256([]byte(canonical))
	scope := strings.Join([]string{a.date, a.region, a.service, a.terminator}, "/")
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(ch2[:])
	key := hmacSHA256([]byte("AWS4"+secret), a.date)
	for _, part := range []string{a.region, a.service, a.terminator} {
		key = hmacSHA256(key, part)
	}
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	if !hmac.Equal([]byte(want), []byte(a.signature)) {
		return model.Errorf("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
	}
	return nil
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func canonicalQuery(v url.Values) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		vals := append([]string(nil), v[k]...)
		sort.Strings(vals)
		for _, x := range vals {
			parts = append(parts, awsEscape(k)+"="+awsEscape(x))
		}
	}
	return strings.Join(parts, "&")
}

func awsEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}
