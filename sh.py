import dispy, sys
open("dep.txt","w").write("hi")
def f(x):
    return open("dep.txt").read()
c = dispy.SharedJobCluster(f, scheduler_node="127.0.0.27:9722", depends=["dep.txt"], dest_path="keepme", cleanup=False, recover_file="rsh")
print(c.submit(1)())
c.close()
