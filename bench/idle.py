def run(tmp, quick):
    return "todo"
