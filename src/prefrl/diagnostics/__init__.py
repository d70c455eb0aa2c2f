"""prefrl.diagnostics"""
