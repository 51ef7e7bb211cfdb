from facecl.cli import app

app()
