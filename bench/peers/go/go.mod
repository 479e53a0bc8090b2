module benchpeer

go 1.19
