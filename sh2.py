import dispy, sqlite3
def f(x):
    return x
c = dispy.SharedJobCluster(f, scheduler_node="127.0.0.27:9722", recover_file="rsh")
print(c.submit(1)())
db = sqlite3.connect("rsh")
for t in db.execute("select name from sqlite_master where type='table'"):
    print(t, list(db.execute(f"select * from {t[0]}"))[:3])
c.close()
