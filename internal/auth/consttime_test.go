package auth

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// secretish matches names of values that must be compared in constant time:
// signatures, MACs, tokens, secrets.
var secretish = regexp.MustCompile(`(?i)(sig|signature|mac|token|secret)`)

// TestSecretsComparedInConstantTime reads the source of every package that
// checks a signature or a token and fails on any == or != between values
// whose names say they are signatures, MACs, tokens or secrets (comparisons
// with "" or nil, which only test presence, are fine): such comparisons must
// use hmac.Equal or subtle.ConstantTimeCompare, which take the same time
// wherever the first difference is, so that response times do not reveal
// how much of a forged signature was right. It also checks that those
// functions are in use where signatures are verified.
func TestSecretsComparedInConstantTime(t *testing.T) {
	dirs := []string{".", "../ops", "../session", "../api", "../webhooks", "../edge", "../server"}
	uses := map[string]bool{}
	fset := token.NewFileSet()
	for _, dir := range dirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, name, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch x := n.(type) {
				case *ast.SelectorExpr:
					if id, ok := x.X.(*ast.Ident); ok {
						uses[id.Name+"."+x.Sel.Name] = true
					}
				case *ast.BinaryExpr:
					if x.Op != token.EQL && x.Op != token.NEQ {
						return true
					}
					if presence(x.X) || presence(x.Y) || label(x.X) || label(x.Y) {
						return true
					}
					if secretish.MatchString(exprName(x.X)) || secretish.MatchString(exprName(x.Y)) {
						t.Errorf("%s: %s %s %s compares a secret value with %s; use hmac.Equal or subtle.ConstantTimeCompare",
							fset.Position(x.Pos()), exprName(x.X), x.Op, exprName(x.Y), x.Op)
					}
				}
				return true
			})
		}
	}
	for _, want := range []string{"hmac.Equal", "subtle.ConstantTimeCompare"} {
		if !uses[want] {
			t.Errorf("%s is not used by the packages that verify signatures and tokens", want)
		}
	}
}

// presence reports whether e is "", nil or a len(...) call: comparing a
// secret with those reveals only whether it is set.
func presence(e ast.Expr) bool {
	switch x := e.(type) {
	case *ast.BasicLit:
		return x.Value == `""` || x.Value == "0"
	case *ast.Ident:
		return x.Name == "nil"
	case *ast.CallExpr:
		if id, ok := x.Fun.(*ast.Ident); ok && id.Name == "len" {
			return true
		}
	}
	return false
}

// label reports whether e names a parameter or field label rather than a
// value (p.name == ParamSignature compares names of query parameters).
func label(e ast.Expr) bool {
	n := exprName(e)
	return strings.HasPrefix(n, "Param") || strings.HasSuffix(n, ".name") || strings.HasSuffix(n, "Name")
}

// exprName is a readable name of a compared expression.
func exprName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return exprName(x.X) + "." + x.Sel.Name
	case *ast.CallExpr:
		return exprName(x.Fun) + "()"
	case *ast.IndexExpr:
		return exprName(x.X) + "[]"
	case *ast.StarExpr:
		return "*" + exprName(x.X)
	case *ast.BasicLit:
		return x.Value
	}
	return ""
}
